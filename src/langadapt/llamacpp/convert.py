"""llama.cpp's own converter on a Hugging Face folder, with what an extended vocabulary needs.

The converter runs in a subprocess (:mod:`.converter_main`, with this interpreter): it imports its own
``gguf-py`` and the model's weights, and a converter crash must not take the stage's process with it.

The pre-tokenizer (llama.cpp #8649): for a byte-level BPE vocabulary the converter names the split regex
by hashing the ids its fixed test string gets. Appended tokens and merges leave the regex as it was but
may change those ids, so an extended tokenizer is "not recognized". We give the converter the name its
own ``get_vocab_base_pre`` computes for the BASE tokenizer, found from langadapt's records
(``extension.json``'s ``base``, written by ``tokenizer extend`` and carried along by the model stages);
when that base is not on this machine, it is rebuilt from the extended ``tokenizer.json`` by dropping the
ids from ``first_new_id`` on and the merges that make them (the extension only appends).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.errors import UserError
from langadapt.llamacpp.sources import LlamaCppSource
from langadapt.runs import EXTENSION_JSON, extension_records, record_folders

MAIN = Path(__file__).with_name("converter_main.py")
MARK = "LANGADAPT-JSON "


class ConverterError(UserError):
    """llama.cpp's converter refused or failed on the model (its last error line, naming the folder)."""


def run_converter(source: LlamaCppSource, mode: str, args: list[str], log: Path | None = None) -> dict[str, Any]:
    """:mod:`.converter_main` in a subprocess; its JSON result. ``log``: where its output is kept."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the vendored gguf-py, always
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(MAIN), str(source.root), mode, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if log is not None:
        log.write_text(proc.stderr + proc.stdout, encoding="utf-8")
    result = next((line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)), None)
    if proc.returncode != 0 or result is None:
        raise ConverterError(f"llama.cpp's converter failed ({mode}): {last_error(proc.stderr + proc.stdout)}")
    return json.loads(result)


def last_error(output: str) -> str:
    """The line of the converter's output that says what went wrong (its last error or exception line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("ERROR:", "Error", "raise ")) or "Error:" in line or "Exception:" in line:
            return line.removeprefix("ERROR:hf-to-gguf:")
    return lines[-1] if lines else "no output"


# ----------------------------------------------------------------------------------------- the base


@dataclass(frozen=True)
class BaseTokenizer:
    folder: Path
    """A folder with the base tokenizer (tokenizer.json)."""
    how: str
    """Where it came from (recorded in stage.json)."""
    first_new_id: int | None
    """The first id the extension added (None when unknown)."""


def extension_record(model_dir: Path) -> tuple[dict[str, Any], Path] | None:
    """The nearest ``extension.json`` along the model's records (:func:`langadapt.runs.extension_records`)."""
    return next(extension_records(model_dir), None)


def find_base(model_dir: Path, scratch: Path) -> BaseTokenizer | None:
    """The tokenizer the model's vocabulary extends, or None when no langadapt record says it extends one."""
    found = extension_record(model_dir)
    if found is None:
        return None
    record, where = found
    first_new = record.get("first_new_id", record.get("base_vocab_size"))
    base = str(record.get("base", ""))
    folder = _base_folder(base)
    if folder is not None:
        return BaseTokenizer(folder, f"{where / EXTENSION_JSON}: base {base}", first_new)
    if first_new is None:
        return None
    rebuilt = rebuild_base(model_dir, int(first_new), scratch)
    return BaseTokenizer(rebuilt, f"rebuilt from {model_dir / 'tokenizer.json'}: ids < {first_new} "
                                  f"({where / EXTENSION_JSON}; base {base!r} not found)", first_new)  # fmt: skip


def _base_folder(base: str) -> Path | None:
    from langadapt.models import ALIASES, resolve_tokenizer

    if not base:
        return None
    if base in ALIASES:
        try:
            return resolve_tokenizer(base)
        except UserError:  # the alias's package is not installed here
            return None
    path = Path(base)
    return path if (path / "tokenizer.json").is_file() else None


def rebuild_base(model_dir: Path, first_new: int, scratch: Path) -> Path:
    """The base tokenizer folder rebuilt from an extended ``tokenizer.json``: ids < ``first_new`` and the
    merges among them (the extension appends ids and merges, so these are the base's own)."""
    data = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    model["vocab"] = {tok: i for tok, i in model["vocab"].items() if i < first_new}
    vocab = model["vocab"]

    def kept(merge: Any) -> bool:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        return a in vocab and b in vocab and a + b in vocab

    model["merges"] = [m for m in model.get("merges", []) if kept(m)]
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < first_new]
    out = Path(scratch) / "base"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (Path(model_dir) / name).is_file():
            cfg = json.loads((Path(model_dir) / name).read_text(encoding="utf-8"))
            if name == "tokenizer_config.json":  # the added tokens past the base are not in the base
                decoder = cfg.get("added_tokens_decoder", {})
                cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < first_new}
            (out / name).write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------- conversion


def check_model(model_dir: Path) -> None:
    """Bad input found before the converter starts: no config or no tokenizer."""
    if not (model_dir / "config.json").is_file():
        raise UserError("not a Hugging Face model folder (no config.json)", model_dir)
    if not any((model_dir / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        raise UserError("the model folder has no tokenizer (tokenizer.json or tokenizer.model): export needs "
                        "the tokenizer beside the weights", model_dir)  # fmt: skip


def stage_model(model_dir: Path, into: Path) -> tuple[Path, str | None]:
    """The folder to hand the converter, and where its ``tokenizer.model`` comes from (None: it has none).

    The converter reads a SentencePiece vocabulary from ``tokenizer.model`` only (ids, scores, byte and
    control pieces; padded embedding rows become [PAD] entries). Model stages save tokenizers with
    transformers, which does not write that file, while ``tokenizer extend`` writes the extended one into
    the tokenizer folder: when the model folder lacks it, a folder of links to the model's files plus the
    nearest ``tokenizer.model`` its records lead to is converted instead (only if its piece count is the
    tokenizer's size, so a stale one is never picked up)."""
    if (model_dir / "tokenizer.model").is_file():
        return model_dir, str(model_dir / "tokenizer.model")
    spm = next((f / "tokenizer.model" for f in record_folders(model_dir) if (f / "tokenizer.model").is_file()), None)
    if spm is None or extension_record(model_dir) is None or not (model_dir / "tokenizer.json").is_file():
        return model_dir, None
    from langadapt.models import load_fast_tokenizer
    from langadapt.tokenizer.spm import read_model

    if len(read_model(spm).pieces) != load_fast_tokenizer(model_dir).get_vocab_size(with_added_tokens=True):
        return model_dir, None
    if into.exists():  # a scratch folder used before
        shutil.rmtree(into)
    into.mkdir(parents=True)
    for item in model_dir.iterdir():
        (into / item.name).symlink_to(item.resolve())
    (into / "tokenizer.model").symlink_to(spm.resolve())
    return into, str(spm)


def known_architectures(source: LlamaCppSource) -> set[str] | None:
    """The architectures the converter's own registry (``TEXT_MODEL_MAP`` in ``conversion/__init__.py``)
    maps to a model class, read without importing it (that import costs seconds: torch, transformers);
    None for a converter without that registry (an older checkout: the probe in the converter decides)."""
    registry = source.root / "conversion" / "__init__.py"
    if not registry.is_file():
        return None
    for node in ast.walk(ast.parse(registry.read_text(encoding="utf-8"))):
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(node.value, ast.Dict):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return None


def check_architecture(source: LlamaCppSource, model_dir: Path) -> None:
    """An architecture the converter does not know is bad input, refused before any conversion."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arches = (config.get("text_config") or {}).get("architectures") or config.get("architectures") or []
    known = known_architectures(source)
    if known is not None and (not arches or arches[0] not in known):
        _unknown(source, arches[0] if arches else None, model_dir)


def _unknown(source: LlamaCppSource, arch: str | None, model_dir: Path) -> None:
    raise UserError(f"llama.cpp's converter ({source.name}) does not know the architecture "
                    f"{arch or 'none given'!r} (config.json 'architectures'); GGUF export needs one it supports",
                    model_dir / "config.json")  # fmt: skip


def convert(source: LlamaCppSource, model_dir: Path, out_file: Path, outtype: str, *, scratch: Path,
            log: Path) -> dict[str, Any]:  # fmt: skip
    """Write ``out_file`` with llama.cpp's converter; return what stage.json records about it.

    The architecture is checked against the converter's own registry first (a UserError naming
    config.json); the pre-tokenizer name is the base tokenizer's when a langadapt record names the base
    and the converter recognises it. On failure no file is left and the converter's error line is raised,
    naming the model folder."""
    check_architecture(source, model_dir)
    base = find_base(model_dir, scratch)
    staged, spm_from = stage_model(model_dir, scratch / "model")
    args = [str(staged)] + (["--base", str(base.folder)] if base else [])
    args += ["--first-new", str(base.first_new_id)] if base and base.first_new_id is not None else []
    args += ["--", "--outfile", str(out_file), "--outtype", outtype]
    try:
        result = run_converter(source, "convert", args, log=log)
    except ConverterError as exc:
        out_file.unlink(missing_ok=True)
        hint = ""
        if "pre-tokenizer was not recognized" in log.read_text(encoding="utf-8"):
            hint = (" (an extended byte-level vocabulary without a langadapt record of its base: export the "
                    "folder `embeddings init` or training wrote, whose records name the base)")
        raise ConverterError(f"{exc}{hint}", model_dir) from exc
    probe = result.pop("probe")
    if not probe["known"]:
        _unknown(source, probe["architecture"], model_dir)
    override = result.pop("pre_override_used")
    base_info = None if base is None else {"folder": str(base.folder), "how": base.how,
                                           "first_new_id": base.first_new_id}  # fmt: skip
    if override:
        how = f"the base tokenizer's, given to the converter ({base.how})"
    elif result.get("tokenizer_model") == "gpt2":
        how = "the converter's own detection on the model's tokenizer"
    else:
        how = f"none needed ({result.get('tokenizer_model')} vocabulary)"
    return {"architecture": probe["architecture"], "converter_class": probe["model_class"],
            "tokenizer_model_file": spm_from,
            "pre_tokenizer_source": how, "model_pre_tokenizer": probe["pre"], "base_pre_tokenizer":
            probe.get("base_pre"), "base": base_info, **result}  # fmt: skip
