"""train sft and train dpo under ``accelerate launch`` with 2 processes on the CPU (DDP on gloo), with the
row freeze: only the new embedding rows (and the layer asked for) train, on every rank.

One chain, as a recipe runs it: SFT of an extended tiny model, then DPO of SFT's final/ (which carries
extension.json, so DPO freezes the same rows).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from langadapt.runs import work_folder

REPO = Path(__file__).resolve().parents[1]
BASE = 500
"""Rows >= BASE count as added by `tokenizer extend` (the tokenizer has 600; the untied model 613 rows)."""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(port: int) -> list[str]:
    # As tests/test_pretrain_dist.py: the torchrun launcher (--multi_gpu) without CUDA gives 2 CPU processes
    # on gloo (accelerate's --cpu starts one process without an MPI hostfile).
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "langadapt.cli"]  # fmt: skip


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _run(cmd: list[str], out: Path) -> dict:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # committed once: the folder, no work folder, no second copy moved aside by a second commit
    assert (out / "DONE").exists() and not work_folder(out).exists()
    assert sorted(p.name for p in out.parent.iterdir() if out.name in p.name) == [out.name]
    return json.loads((out / "stage.json").read_text(encoding="utf-8"))


def _assert_row_freeze(before: dict, after: dict) -> None:
    """Rows below BASE and the padding rows after the tokenizer's bit-identical, the new rows changed, and
    every parameter outside the embedding matrices and layers.1 bit-identical."""
    n_tok = before["lm_head.weight"].shape[0] - 13
    assert set(after) == set(before)
    for key, was in before.items():
        now = after[key]
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(was[:BASE], now[:BASE]) and torch.equal(was[n_tok:], now[n_tok:]), key
            assert not torch.equal(was[BASE:n_tok], now[BASE:n_tok]), key
        elif ".layers.1." not in key:
            assert torch.equal(was, now), key


def _assert_losses(out: Path, steps: int) -> list[float]:
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses
    return losses


def test_sft_then_dpo_on_two_processes_train_only_the_new_rows(tmp_path, tiny_untied_padded, en_texts, hu_texts):
    model = tmp_path / "model"
    shutil.copytree(tiny_untied_padded, model)
    (model / "extension.json").write_text(json.dumps({"base_vocab_size": BASE}))
    chats = [{"messages": [_turn("user", t[:40]), _turn("assistant", t[40:120])]} for t in hu_texts[:32]]
    pairs = [{"prompt": [_turn("user", t[:40])], "chosen": [_turn("assistant", t[40:100])],
              "rejected": [_turn("assistant", en_texts[i + 1][40:100])]} for i, t in enumerate(hu_texts[:16])]  # fmt: skip
    chat_file, pair_file = _jsonl(tmp_path / "chat.jsonl", chats), _jsonl(tmp_path / "pairs.jsonl", pairs)
    common = ["--train", "new-embeddings,layers.1", "--micro-batch", "2", "--no-bf16", "--device", "cpu",
              "--warmup", "0", "--scheduler", "constant", "--weight-decay", "0.1", "--seed", "3"]  # fmt: skip

    sft = tmp_path / "sft"
    record = _run([*_launch(29536), "train", "sft", "--model", str(model), "--data", chat_file, "--ratio", "0",
                   "--max-steps", "4", "--lr", "3e-3", "--out", str(sft), *common], sft)  # fmt: skip
    assert (record["processes"], record["distributed"]) == (2, "MULTI_CPU")
    assert record["frozen_rows_unchanged"] is True and record["steps"] == 4
    _assert_losses(sft, 4)
    _assert_row_freeze(load_file(model / "model.safetensors"), load_file(sft / "final" / "model.safetensors"))

    dpo = tmp_path / "dpo"
    record = _run([*_launch(29537), "train", "dpo", "--model", str(sft / "final"), "--data", pair_file,
                   "--ratio", "0", "--max-steps", "4", "--lr", "3e-3", "--eval-pairs", "8", "--out", str(dpo),
                   *common], dpo)  # fmt: skip
    assert (record["processes"], record["distributed"]) == (2, "MULTI_CPU")
    assert record["frozen_rows_unchanged"] is True and record["steps"] == 4
    assert record["reward_margin_after"] > record["reward_margin_before"]
    _assert_losses(dpo, 4)
    _assert_row_freeze(load_file(sft / "final" / "model.safetensors"), load_file(dpo / "final" / "model.safetensors"))
    assert json.loads((dpo / "final" / "extension.json").read_text())["base_vocab_size"] == BASE
