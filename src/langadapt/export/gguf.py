"""``langadapt export gguf``: a model folder as one GGUF file, converted by llama.cpp's own converter and
checked in a real llama.cpp runtime.

The stage folder (``--out``; in a run ``export/``) holds ``model-<outtype>.gguf``, ``convert.log`` (the
converter's own output), ``verify.json`` (every figure of :mod:`langadapt.export.verify`), stage.json and
DONE. The GGUF is written inside the work folder, so the runner's commit makes it appear whole or not at
all; bad input (an architecture the converter does not know, a folder without a tokenizer, no llama.cpp
source) is refused before anything is written.

A failed check does not discard the export: the GGUF, its figures and ``"verified": false`` are committed
and the command exits 1 (a recipe run logs a warning). The conversion is deterministic, so discarding it
would only make the next run redo it to fail again, and the figures are what tells a numeric drift of a
quantised type from a broken tokenizer. Without a runtime the export is committed with "not verified"
and the reason, unless ``verify: require``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from langadapt.config.export import ExportConfig
from langadapt.corpus.readers import check_corpus
from langadapt.errors import UserError
from langadapt.llamacpp.convert import check_model, convert
from langadapt.llamacpp.session import find_runtime
from langadapt.llamacpp.sources import find_llama_cpp
from langadapt.models import resolve_model
from langadapt.runs import write_json_atomic

log = logging.getLogger(__name__)
VERIFY_JSON = "verify.json"
CONVERT_LOG = "convert.log"


def gguf_name(outtype: str) -> str:
    return f"model-{outtype}.gguf"


def export_gguf(cfg: ExportConfig, work: Path) -> dict[str, Any]:
    """Stage entry: convert ``cfg.model`` into ``work``, verify it when a runtime is found; the figures."""
    work = Path(work)
    model_dir = resolve_model(cfg.model) if cfg.model else None
    if model_dir is None:
        raise UserError("export gguf needs --model (a Hugging Face model folder)")
    check_model(model_dir)
    if cfg.verify != "off":
        for files in (cfg.verify_target, cfg.verify_english):
            if files:
                check_corpus(files, cfg.text_field)
    source = find_llama_cpp(cfg.llama_cpp)
    runtime, reason = (None, "verify: off") if cfg.verify == "off" else find_runtime(cfg.llama_lib,
                                                                                    llama_cpp=cfg.llama_cpp)  # fmt: skip
    if runtime is None and cfg.verify == "require":
        raise UserError(f"verify: require, but {reason}")
    out_file = work / gguf_name(cfg.outtype)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="langadapt-export-") as scratch:
        conversion = convert(source, model_dir, out_file, cfg.outtype, scratch=Path(scratch), log=work / CONVERT_LOG)
    seconds = time.perf_counter() - start
    first_new = (conversion.get("base") or {}).get("first_new_id")
    check_new_tokens(model_dir, conversion, first_new)
    figures: dict[str, Any] = {
        "gguf": out_file.name, "outtype": cfg.outtype, "size_bytes": out_file.stat().st_size,
        "export_seconds": round(seconds, 2), "llama_cpp": {"source": source.name, "origin": source.origin},
        "pre_tokenizer": conversion.get("pre_tokenizer"), "pre_tokenizer_source": conversion["pre_tokenizer_source"],
        "conversion": conversion,
    }  # fmt: skip
    if runtime is None:
        figures.update(verified=False, verification={"status": f"not verified: {reason}"})
        log.warning("%s: not verified: %s", out_file.name, reason)
        return figures
    from langadapt.export.verify import verify  # transformers and the reference model: only when verifying

    start = time.perf_counter()
    result = verify(out_file, model_dir, runtime, cfg, first_new)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["missing_symbols"] = runtime.missing_symbols
    write_json_atomic(work / VERIFY_JSON, result)
    figures.update(verified=result["ok"], verification=summary(result))
    if not result["ok"]:
        log.warning("%s FAILED its llama.cpp check: %s", out_file.name, "; ".join(result["failures"]))
    return figures


def check_new_tokens(model_dir: Path, conversion: dict[str, Any], first_new: int | None) -> None:
    """A stale SentencePiece tokenizer.model turns the new ids into unused ``[PAD]`` entries that llama.cpp
    never produces, and the converter still "succeeds" (llama.cpp PR #9967): refuse that model."""
    if first_new is None or not conversion.get("new_pad_ids"):
        return
    from langadapt.models import load_fast_tokenizer

    size = load_fast_tokenizer(model_dir).get_vocab_size(with_added_tokens=True)
    lost = [i for i in conversion.pop("new_pad_ids") if i < size]
    if lost:
        raise UserError(f"{len(lost)} new tokens (ids {lost[0]}..{lost[-1]}) became unused [PAD] entries in the "
                        "GGUF: this tokenizer.model is the base's, not the extended vocabulary (re-run "
                        "`tokenizer extend`, which writes a consistent one)", model_dir / "tokenizer.model")  # fmt: skip


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The verification's headline figures for stage.json (verify.json has everything)."""
    tok, bpb, g = result["tokenization"], result["bpb"], result["greedy"]
    out: dict[str, Any] = {
        "status": "verified" if result["ok"] else "FAILED: " + "; ".join(result["failures"]),
        "tokenization": {"documents": tok["documents"], "mismatches": tok["mismatches"]},
        "greedy": {"prompts": g["prompts"], "agree": g["agree"]},
        "seconds": result["seconds"],
    }
    if bpb:
        out["bpb"] = {k: {"llama_cpp": v["llama_cpp"], "transformers": v["transformers"],
                          "relative_diff": round(v["relative_diff"], 6)}
                      for k, v in bpb.items() if isinstance(v, dict)}  # fmt: skip
        out["bpb_max_relative_diff"] = round(bpb["max_relative_diff"], 6)
    return out


def print_export(record: dict[str, Any], out: Path) -> None:
    """The CLI's summary of a finished export; exit code 1 when its check failed."""
    out = Path(out)
    size = record.get("size_bytes", 0) / 2**20
    print(f"{out / record['gguf']}: {record['outtype']}, {size:.1f} MiB, converted in {record['export_seconds']} s "
          f"(pre-tokenizer {record.get('pre_tokenizer')!r}: {record.get('pre_tokenizer_source')})")  # fmt: skip
    v = record.get("verification", {})
    print(f"llama.cpp check: {v.get('status')}")
    if "tokenization" in v:
        t, g = v["tokenization"], v["greedy"]
        print(f"  tokenization: {t['mismatches']} of {t['documents']} texts differ from transformers'")
        for name, b in v.get("bpb", {}).items():
            print(f"  bits per byte ({name}): llama.cpp {b['llama_cpp']:.4f}, transformers {b['transformers']:.4f} "
                  f"({100 * b['relative_diff']:.3f}% apart)")  # fmt: skip
        print(f"  greedy continuations: {g['agree']} of {g['prompts']} agree")
        if (out / VERIFY_JSON).exists():
            print(f"  details: {out / VERIFY_JSON}")
    if record.get("verified") is False and "tokenization" in v:
        raise SystemExit(1)

