"""The distributed path on CPU: 2 processes (gloo) = 1 process with twice the gradient accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pretrain_fixtures as pf
import pytest

from langadapt.train.monitor import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _args(model: Path, data: Path, out: Path, accum: int) -> list[str]:
    return ["-m", "langadapt.cli", "train", "pretrain", "--model", str(model), "--data", str(data),
            "--out", str(out), "--max-steps", "3", "--micro-batch", "2", "--grad-accum", str(accum),
            "--no-bf16", "--lr", "1e-3", "--warmup", "1"]  # fmt: skip


def test_two_processes_match_one_with_double_accumulation(tmp_path, tiny_tied, bytelevel_tok, hu_texts):
    data = pf.write_packed(tmp_path / "packed", bytelevel_tok, hu_texts[:60], 40)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *_args(tiny_tied, data, tmp_path / "one", 4)], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    # accelerate 1.15: `launch --cpu --num_processes 2` starts ONE process unless an MPI hostfile is given;
    # the torchrun launcher (--multi_gpu) on a machine without CUDA gives 2 CPU processes on gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29533"]  # fmt: skip
    two = subprocess.run([*launch, *_args(tiny_tied, data, tmp_path / "two", 2)], env=env,
                         capture_output=True, text=True, cwd=REPO, check=False)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], abs=1e-5)
    assert b[0]["tokens"] == a[0]["tokens"]
    assert json.loads((tmp_path / "two" / "stage.json").read_text())["processes"] == 2


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for name in ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"):
        kinds[name] = (load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml")).distributed_type.value)
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED",
                     "deepspeed-zero3": "DEEPSPEED"}  # fmt: skip
