"""GGUF export (issue 18): export seconds, GGUF size and the llama.cpp check per outtype, for SmolLM2-135M and
SmolLM2 extended with 8,000 Hungarian tokens as the demo does (tokenizer extend on the demo's Hungarian
text, English train text as the reference, then embeddings init; or the demo run's own model when
runs/demo-hu/pretrain/final exists). With --russian also SmolLM2 + 4,000 Russian tokens (the shared Russian
split), the vocabulary llama.cpp's converter alone refuses ("BPE pre-tokenizer was not recognized").

    python bench/export_bench.py --llama-cpp PATH [--llama-lib PATH] [--outtypes f32 f16 bf16 q8_0] [--russian]

Held-out text: ../shared/corpora/{hu,en}/valid.jsonl.gz. Prints a markdown table (and writes it with the
raw records to --work/results.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from langadapt.config import ExportConfig, ExtendConfig, InitConfig
from langadapt.models import resolve_model
from langadapt.runs import is_done, run_stage
from langadapt.stages import BY_NAME

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src" / "langadapt" / "demo_data"
SHARED = REPO.parent / "shared" / "corpora"


def extended(work: Path, name: str, corpus: Path, n_new: int) -> Path:
    """SmolLM2 + n_new tokens learnt on ``corpus`` (tokenizer extend, embeddings init), made once in ``work``."""
    tok, model = work / f"{name}-tokenizer", work / f"{name}-model"
    if not is_done(tok):
        run_stage(BY_NAME["extend"], ExtendConfig(base="smollm2-135m", corpus=[str(corpus)], num_new_tokens=n_new,
                                                  english_corpus=[str(DEMO / "en-train.jsonl.gz")]), tok)  # fmt: skip
    if not is_done(model):
        run_stage(BY_NAME["init"], InitConfig(model="smollm2-135m", tokenizer=str(tok), device="cpu"), model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", default="")
    ap.add_argument("--llama-lib", default="")
    ap.add_argument("--outtypes", nargs="+", default=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/export-bench"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--russian", action="store_true")
    ap.add_argument("--bpb-docs", type=int, default=4, help="documents per corpus scored for bpb")
    ap.add_argument("--max-doc-chars", type=int, default=1500)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    demo_final = REPO / "runs" / "demo-hu" / "pretrain" / "final"
    models = {"SmolLM2-135M": resolve_model("smollm2-135m"),
              "+8k hu": demo_final if demo_final.is_dir() else extended(args.work, "hu8k",
                                                                        DEMO / "hu-train.jsonl.gz", 8000)}  # fmt: skip
    if args.russian:
        models["+4k ru"] = extended(args.work, "ru4k", SHARED / "ru" / "train.jsonl.gz", 4000)
    rows, records = [], {}
    for label, model in models.items():
        for outtype in args.outtypes if label != "+4k ru" else ["f16"]:
            out = args.work / f"export-{label.replace(' ', '').replace('+', 'plus')}-{outtype}"
            cfg = ExportConfig(model=str(model), outtype=outtype, llama_cpp=args.llama_cpp, llama_lib=args.llama_lib,
                               verify_target=[str(SHARED / "hu" / "valid.jsonl.gz")] if label != "+4k ru" else
                               [str(SHARED / "ru" / "valid.jsonl.gz")],
                               verify_english=[str(SHARED / "en" / "valid.jsonl.gz")], bpb_docs=args.bpb_docs,
                               max_doc_chars=args.max_doc_chars, threads=args.threads)  # fmt: skip
            if is_done(out):  # an earlier run's (maybe with other check settings): shown as it was
                rec = json.loads((out / "stage.json").read_text(encoding="utf-8"))
            else:
                started = time.perf_counter()
                rec = run_stage(BY_NAME["export"], cfg, out)
                rec["wall_seconds"] = round(time.perf_counter() - started, 1)
            records[f"{label} {outtype}"] = rec
            rows.append(row(label, rec))
            print(rows[-1], flush=True)
    table = "\n".join([HEADER, SEP, *rows])
    (args.work / "results.json").write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    print(table)


HEADER = ("| model | outtype | export s | GGUF MiB | pre-tokenizer (source) | tokenization mismatches | "
          "bpb target llama.cpp / HF (diff) | bpb English llama.cpp / HF (diff) | greedy agree | check s |")  # fmt: skip
SEP = "|---|---|---|---|---|---|---|---|---|---|"


def row(label: str, rec: dict) -> str:
    v = rec["verification"]
    src = rec["pre_tokenizer_source"]
    src = "base" if src.startswith("the base tokenizer") else "converter" if "own detection" in src else "n/a"
    if "tokenization" not in v:
        return f"| {label} | {rec['outtype']} | {rec['export_seconds']} | {rec['size_bytes'] / 2**20:.1f} | {v['status']} |"
    bpb = v.get("bpb", {})

    def b(name: str) -> str:
        x = bpb.get(name)
        return "—" if x is None else f"{x['llama_cpp']:.4f} / {x['transformers']:.4f} ({100 * x['relative_diff']:.3f}%)"

    t, g = v["tokenization"], v["greedy"]
    return (f"| {label} | {rec['outtype']} | {rec['export_seconds']} | {rec['size_bytes'] / 2**20:.1f} | "
            f"{rec['pre_tokenizer']} ({src}) | {t['mismatches']} / {t['documents']} | {b('target')} | "
            f"{b('english')} | {g['agree']} / {g['prompts']} | {v['seconds']} |")  # fmt: skip


if __name__ == "__main__":
    main()
