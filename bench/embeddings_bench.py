"""New-row initialisations and DictaLM distillation on SmolLM2-135M + Hungarian tokens, in bits per byte.

    python bench/embeddings_bench.py [--tokenizer DIR] [--docs 12] [--steps 30] [--calibrate-steps 15]

Rows: base model; the extended model initialised by random / HF default (``resize_token_embeddings``
with transformers' mean_resizing) / mean-subword / mean-subword + shift remedy; the last one after
distillation (stage 1) and after calibration (stage 2). Columns: Hungarian and English valid bpb on the
first ``--docs`` documents, tokens per word, KL(base || model) on English, and the seconds of each stage.
Without ``--tokenizer`` the extended tokenizer (8,000 tokens, hu/train) is built once into ``--work``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from langadapt.config import DistillConfig, InitConfig
from langadapt.corpus.readers import iter_documents
from langadapt.embeddings.distill import train_new_rows
from langadapt.models import load_model, load_tokenizer, resolve_model
from langadapt.runs import run_stage
from langadapt.runtime import bf16_is_faster
from langadapt.scoring import bpb_of_model
from langadapt.stages import BY_NAME

CORPORA = Path("/work/shared/corpora")


def extended_tokenizer(work: Path, num_new: int) -> Path:
    out = work / f"tokenizer-hu{num_new}"
    if out.exists():
        return out
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import ext_tok  # uses langadapt.tokenizer.extend when it exists

    texts = list(iter_documents([CORPORA / "hu/train.jsonl.gz"]))
    return ext_tok.extend_tokenizer(resolve_model("smollm2-135m"), texts, out, num_new,
                                    english=[CORPORA / "en/train.jsonl.gz"])  # fmt: skip


def evaluate(model, tok, texts: dict[str, list[str]], bf16: bool) -> dict[str, float]:
    row: dict[str, float] = {}
    for lang, docs in texts.items():
        r = bpb_of_model(model, tok, docs, batch_size=8, max_len=512, stride=256, bf16=bf16)
        row[f"{lang}_bpb"], row[f"{lang}_tpw"] = r["bpb"], r["tokens_per_word"]
    return row


def hf_default(work: Path, tok_dir: Path) -> tuple[Path, float]:
    """transformers' own resize (mean_resizing=True, its default), saved like our init for equal treatment."""
    out = work / "init-hf-default"
    t0 = time.perf_counter()
    if not out.exists():
        model, tok = load_model("smollm2-135m"), load_tokenizer(tok_dir)
        torch.manual_seed(0)
        model.resize_token_embeddings(len(tok))
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out, time.perf_counter() - t0


def english_kl(folder: Path) -> float:
    """KL(base || model) on the packaged English sample, as init measures it (probe.py)."""
    from langadapt.embeddings.init import DEMO_ENGLISH
    from langadapt.embeddings.probe import probe_hidden

    base, base_tok = load_model("smollm2-135m"), load_tokenizer("smollm2-135m")
    probe = probe_hidden(base, base_tok, list(iter_documents([DEMO_ENGLISH], max_docs=16)))
    head = load_model(folder).get_output_embeddings().weight.detach()
    n_ext = len(load_tokenizer(folder))
    return probe.measure(base.get_output_embeddings().weight.detach(), head, len(base_tok), n_ext)["english_kl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/embeddings_bench"))
    ap.add_argument("--docs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--calibrate-steps", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--shift", type=float, default=2.0)
    ap.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bf16 = bf16_is_faster()
    tok_dir = args.tokenizer or extended_tokenizer(args.work, 8000)
    texts = {lang: list(iter_documents([CORPORA / f"{lang}/valid.jsonl.gz"], max_docs=args.docs))
             for lang in ("hu", "en")}  # fmt: skip
    only = set(filter(None, args.only.split(",")))
    rows: list[dict] = []

    def add(name: str, folder: Path | str, seconds: float, kl: float | None) -> None:
        if only and name not in only:
            return
        t0 = time.perf_counter()
        row = {"row": name, "seconds": seconds, "english_kl": kl,
               **evaluate(load_model(folder), load_tokenizer(folder), texts, bf16)}  # fmt: skip
        row["eval_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)

    add("base", "smollm2-135m", 0.0, 0.0)
    inits = {"random": {"method": "random", "output_remedy": "none"},
             "mean-subword": {"output_remedy": "none"},
             "mean-subword+shift": {"output_remedy": "shift", "output_shift": args.shift}}  # fmt: skip
    for name, kw in inits.items():
        out = args.work / f"init-{name}"
        record = run_stage(BY_NAME["init"], InitConfig(model="smollm2-135m", tokenizer=str(tok_dir), **kw), out)
        add(name, out, record["seconds"], record["english_kl"])
    folder, seconds = hf_default(args.work, tok_dir)
    add("hf-default", folder, seconds, english_kl(folder) if not only or "hf-default" in only else None)

    if not only or only & {"distilled", "calibrated"}:
        start = args.work / "init-mean-subword+shift"
        student, teacher = load_model(start), load_model("smollm2-135m")
        cfg = DistillConfig(model=str(start), steps=args.steps, calibrate_steps=args.calibrate_steps,
                            lr=args.lr, batch_size=args.batch_size, seq_len=args.seq_len)  # fmt: skip
        docs = iter_documents([CORPORA / "hu/train.jsonl.gz"])
        stage_names = {"distill": "distilled", "calibrate": "calibrated"}

        def after(stage: str, model, progress) -> None:
            t0 = time.perf_counter()
            row = {"row": stage_names[stage], "seconds": progress.seconds[stage], "english_kl": None,
                   **evaluate(model, load_tokenizer(start), texts, bf16)}  # fmt: skip
            row["eval_seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(row, flush=True)

        progress = train_new_rows(student, teacher, load_tokenizer(start), load_tokenizer("smollm2-135m"),
                                  docs, cfg, after_stage=after)  # fmt: skip
        print({"losses": {k: [round(x, 4) for x in v] for k, v in progress.losses.items()}})
    print_table(rows, args, bf16)


def print_table(rows: list[dict], args, bf16: bool) -> None:
    base = next((r for r in rows if r["row"] == "base"), None)
    print(f"\nSmolLM2-135M + 8,000 Hungarian tokens; first {args.docs} valid docs per language; bf16={bf16}; "
          f"distill {args.steps}+{args.calibrate_steps} steps x {args.batch_size} x {args.seq_len}, lr {args.lr}")
    print("| row | hu bpb | en bpb | en bpb vs base | hu tok/word | en tok/word | English KL (nats) | stage s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        rel = f"{100 * (r['en_bpb'] / base['en_bpb'] - 1):+.2f}%" if base else ""
        kl = "" if r["english_kl"] is None else f"{r['english_kl']:.4f}"
        print(f"| {r['row']} | {r['hu_bpb']:.4f} | {r['en_bpb']:.4f} | {rel} | {r['hu_tpw']:.3f} | "
              f"{r['en_tpw']:.3f} | {kl} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
