"""Tokens/s of our ``train sft`` / ``train dpo`` against a plain trl script, same model, data and settings.

    python bench/bench_align.py                          # CPU: SmolLM2-135M, 6 steps each, 256 tokens
    python bench/bench_align.py --model /models/x --device cuda --steps 30 --max-length 2048

Variants, each in its own process:
  sft-ours   langadapt's stage (run_stage): assistant-only loss through the marked copy of the template
  sft-trl    SFTTrainer(model=path) with SFTConfig(...) written out by hand as a trl user would; trl cannot
             mark SmolLM2's ChatML template itself, so it trains on the whole sequence (noted in the output)
  dpo-ours   langadapt's stage from the same model, reference log-probs precomputed
  dpo-trl    DPOTrainer(model=path) with DPOConfig(...), reference log-probs precomputed
tokens/s = trl's ``num_tokens`` (every token of every sequence, padding excluded) / ``train_runtime``
(the training loop only: not loading, tokenizing, precomputing or evaluating), for every variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_data(folder: Path, n: int) -> dict[str, str]:
    """Chat and preference jsonl from the demo corpus (English and Hungarian)."""
    sys.path.insert(0, str(REPO / "tests"))
    import tiny

    def chats(texts: list[str]) -> list[dict]:
        return [{"messages": [{"role": "user", "content": t[:80]}, {"role": "assistant", "content": t[80:600]}]}
                for t in texts]  # fmt: skip

    def pairs(texts: list[str]) -> list[dict]:
        return [{"prompt": [{"role": "user", "content": t[:80]}], "chosen": [{"role": "assistant", "content": t[80:400]}],
                 "rejected": [{"role": "assistant", "content": texts[(i + 1) % len(texts)][80:400]}]}
                for i, t in enumerate(texts)]  # fmt: skip

    en, hu = ([t for t in tiny.demo_texts(lang, n=4 * n) if len(t) > 600][:n] for lang in ("en", "hu"))
    files = {"chat_en": chats(en), "chat_hu": chats(hu), "pref_en": pairs(en), "pref_hu": pairs(hu)}
    out = {}
    for name, rows in files.items():
        out[name] = str(folder / f"{name}.jsonl")
        Path(out[name]).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out


def settings(args: argparse.Namespace) -> dict:
    return {"max_steps": args.steps, "micro_batch": args.micro_batch, "max_length": args.max_length, "lr": 1e-5,
            "warmup": 0, "bf16": args.bf16, "device": args.device}  # fmt: skip


def ours(kind: str, model: str, data: dict[str, str], out: Path, args: argparse.Namespace) -> dict:
    from langadapt.config import DpoConfig, SftConfig
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    if kind == "sft":
        cfg = SftConfig(model=model, data=[data["chat_en"]], translated=[data["chat_hu"]], ratio=0.5, **settings(args))
    else:
        cfg = DpoConfig(model=model, data=[data["pref_en"]], translated=[data["pref_hu"]], ratio=0.5,
                        eval_pairs=args.micro_batch, **settings(args))  # fmt: skip
    record = run_stage(BY_NAME[kind], cfg, out)
    return {"tokens": record["tokens"], "seconds": record["train_seconds"], "tokens_per_s": record["tokens_per_s"],
            "loss_first": record["train_loss_first"], "loss_last": record["train_loss_last"]}  # fmt: skip


def plain_trl(kind: str, model: str, data: dict[str, str], out: Path, args: argparse.Namespace) -> dict:
    """What a trl user writes: load the files with datasets, mix them, hand the model path to the trainer."""
    import torch
    from datasets import interleave_datasets, load_dataset

    from langadapt.runtime import use_bf16

    files = [data["chat_en"], data["chat_hu"]] if kind == "sft" else [data["pref_en"], data["pref_hu"]]
    parts = [load_dataset("json", data_files=f, split="train").shuffle(seed=0) for f in files]
    dataset = interleave_datasets(parts, probabilities=[0.5, 0.5], seed=0)
    common = {"output_dir": str(out), "max_steps": args.steps, "per_device_train_batch_size": args.micro_batch,
              "learning_rate": 1e-5, "warmup_steps": 0, "bf16": use_bf16(args.bf16, torch.device(args.device)),
              "use_cpu": args.device == "cpu", "activation_checkpointing": False, "max_length": args.max_length,
              "logging_steps": 1, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}  # fmt: skip
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, args=DPOConfig(**common, precompute_ref_log_probs=True), train_dataset=dataset)
    result = trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    tokens, seconds = logs[-1]["num_tokens"], result.metrics["train_runtime"]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "loss_first": logs[0]["loss"],
            "loss_last": logs[-1]["loss"]}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    import torch

    from langadapt.models import resolve_model

    torch.set_num_threads(args.threads)
    kind, who = args.variant.split("-")
    work = Path(args.work)
    model = str(resolve_model(args.model))
    fn = ours if who == "ours" else plain_trl
    print("RESULT " + json.dumps(fn(kind, model, json.loads(args.data), work / args.variant, args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--variants", default="sft-ours,sft-trl,dpo-ours,dpo-trl")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.examples)
        passed = [f"--model={args.model}", f"--device={args.device}", f"--steps={args.steps}",
                  f"--micro-batch={args.micro_batch}", f"--max-length={args.max_length}", f"--threads={args.threads}",
                  *([] if args.bf16 is None else ["--bf16" if args.bf16 else "--no-bf16"])]  # fmt: skip
        rows = {}
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, *passed, "--variant", variant, "--work", tmp, "--data", json.dumps(data)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{variant}: failed\n{proc.stderr[-3000:]}")
                continue
            rows[variant] = json.loads(line[len("RESULT "):])
    print(f"model {args.model}, {args.device}, {args.steps} steps x {args.micro_batch} x <= {args.max_length} tokens")
    print(f"{'variant':10} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'loss first':>10} {'loss last':>9}")
    for variant, r in rows.items():
        print(f"{variant:10} {r['tokens']:8.0f} {r['seconds']:8.2f} {r['tokens_per_s']:9.0f} {r['loss_first']:10.4f} "
              f"{r['loss_last']:9.4f}")  # fmt: skip
    for kind in ("sft", "dpo"):
        if f"{kind}-ours" in rows and f"{kind}-trl" in rows:
            ratio = rows[f"{kind}-ours"]["tokens_per_s"] / rows[f"{kind}-trl"]["tokens_per_s"]
            print(f"{kind}: ours / plain trl tokens/s = {ratio:.2f}")
    print("note: sft-trl trains on every token (trl cannot add generation markers to this template); "
          "sft-ours on the assistant turns only")


if __name__ == "__main__":
    main()
