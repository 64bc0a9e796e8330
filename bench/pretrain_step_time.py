"""Seconds per optimizer step of ``train pretrain`` on the real SmolLM2-135M, fp32 vs bf16 autocast.

    python bench/pretrain_step_time.py --steps 4 --micro-batch 4 --seq-len 512

Runs our loop (``langadapt.train.pretrain``, train: full, document-masked SDPA) on packed demo text, once
per precision, and prints the median seconds per step (the first step, with its warm-up, is excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--train", default="full")
    args = ap.parse_args()

    import pretrain_fixtures as pf
    import tiny
    import torch

    from langadapt.config import PretrainConfig
    from langadapt.models import resolve_model
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME
    from langadapt.train.monitor import read_metrics

    model = resolve_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        texts = tiny.demo_texts("hu", n=400) + tiny.demo_texts("en", n=200)
        data = pf.write_packed(Path(tmp) / "packed", model, texts, args.seq_len)
        results = {}
        for bf16 in (False, True):
            cfg = PretrainConfig(model=str(model), data=str(data), max_steps=args.steps, bf16=bf16,
                                 micro_batch=args.micro_batch, train=args.train, lr=5e-4)
            start = time.perf_counter()
            run_stage(BY_NAME["pretrain"], cfg, Path(tmp) / f"run-{bf16}")
            wall = time.perf_counter() - start
            secs = [r["seconds"] for r in read_metrics(Path(tmp) / f"run-{bf16}" / "metrics.jsonl")]
            results["bf16" if bf16 else "fp32"] = {
                "median_s_per_step": statistics.median(secs[1:] or secs), "steps_s": secs,
                "wall_s_incl_load_and_save": wall,
            }
    print(json.dumps({"torch_threads": torch.get_num_threads(), "rows": args.micro_batch,
                      "seq_len": args.seq_len, "train": args.train, **results}, indent=2))


if __name__ == "__main__":
    main()
