"""The distributed paths on CPU: 2 processes (gloo) = 1 process with twice the gradient accumulation.

DDP, DeepSpeed ZeRO-2/3 and FSDP2 run the CLI under ``accelerate launch`` with the shipped configs
(FSDP2 through tests/fsdp_on_cpu.py: accelerate offers FSDP only on GPUs). The ZeRO and FSDP2 cases
train ``new-embeddings``, where row-level freezing is a known failure of sharded training.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pretrain_fixtures as pf
import pytest
import torch
from safetensors.torch import load_file

from langadapt.train.monitor import read_metrics

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
BASE_ROWS = 500  # rows >= 500 pretend to be the ones `tokenizer extend` added (the tokenizer has 600)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(config: str | None, port: int) -> list[str]:
    config_args = ["--config_file", str(CONFIGS / config)] if config else ["--multi_gpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", *config_args, "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]  # fmt: skip


def _args(model: Path, data: Path, out: Path, accum: int) -> list[str]:
    return ["-m", "langadapt.cli", "train", "pretrain", "--model", str(model), "--data", str(data),
            "--out", str(out), "--max-steps", "3", "--micro-batch", "2", "--grad-accum", str(accum),
            "--no-bf16", "--lr", "1e-3", "--warmup", "1"]  # fmt: skip


def test_two_processes_match_one_with_double_accumulation(tmp_path, tiny_tied, bytelevel_tok, hu_texts):
    data = pf.write_packed(tmp_path / "packed", bytelevel_tok, hu_texts[:60], 40)
    one = subprocess.run([sys.executable, *_args(tiny_tied, data, tmp_path / "one", 4)], env=ENV,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    # accelerate 1.15: `launch --cpu --num_processes 2` starts ONE process unless an MPI hostfile is given;
    # the torchrun launcher (--multi_gpu) on a machine without CUDA gives 2 CPU processes on gloo.
    two = subprocess.run([*_launch(None, 29533), *_args(tiny_tied, data, tmp_path / "two", 2)], env=ENV,
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
        kinds[name] = load_config_from_file(str(CONFIGS / f"{name}.yaml")).distributed_type.value
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED",
                     "deepspeed-zero3": "DEEPSPEED"}  # fmt: skip


def _rows_model(tmp_path: Path, model: Path) -> Path:
    out = tmp_path / f"rows_{model.name}"
    shutil.copytree(model, out)
    (out / "extension.json").write_text(json.dumps({"base_vocab_size": BASE_ROWS}))
    return out


def _assert_only_new_rows_trained(before: dict, after: dict, n_tokens: int) -> None:
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in after:  # a tied head is saved once
            assert torch.equal(before[key][:BASE_ROWS], after[key][:BASE_ROWS]), key
            assert torch.equal(before[key][n_tokens:], after[key][n_tokens:]), key  # padding rows
            assert not torch.equal(before[key][BASE_ROWS:n_tokens], after[key][BASE_ROWS:n_tokens]), key


NEEDS_DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="no deepspeed")


@pytest.mark.parametrize(("backend", "model_fixture"), [
    pytest.param("deepspeed-zero2", "tiny_untied_padded", marks=NEEDS_DEEPSPEED),
    pytest.param("deepspeed-zero3", "tiny_untied_padded", marks=NEEDS_DEEPSPEED),
    pytest.param("deepspeed-zero3", "tiny_tied", marks=NEEDS_DEEPSPEED),
    ("fsdp", "tiny_untied_padded"),
    ("ddp", "tiny_tied"),
])  # fmt: skip
def test_sharded_training_trains_only_new_rows_like_one_process(tmp_path, request, backend, model_fixture,
                                                                bytelevel_tok, hu_texts):  # fmt: skip
    """DDP, ZeRO-2/3 and FSDP2 through the CLI: the new rows train as in one process, every other row stays.

    The untied model has 613 rows (13 of padding), so FSDP2's dim-0 shards are uneven and the mask's
    global row offsets matter. ZeRO-3 and FSDP2 also resume from their sharded checkpoint bit-identically.
    """
    model = _rows_model(tmp_path, request.getfixturevalue(model_fixture))
    data = pf.write_packed(tmp_path / "packed", bytelevel_tok, hu_texts[:60], 40)
    spec = ["--train", "new-embeddings,layers.1"]
    one = subprocess.run([sys.executable, *_args(model, data, tmp_path / "one", 4), *spec], env=ENV,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    launch = _launch(None if backend == "ddp" else f"{backend}.yaml", 29534)
    if backend == "fsdp":  # accelerate offers FSDP only on GPUs: see the shim
        launch.append(str(Path(__file__).with_name("fsdp_on_cpu.py")))
        args = _args(model, data, tmp_path / "two", 2)[2:]  # without "-m langadapt.cli"
    else:
        args = _args(model, data, tmp_path / "two", 2)
    launch_two = [*launch, *args, *spec, "--checkpoint-every", "2"]
    two = subprocess.run(launch_two, env=ENV, capture_output=True, text=True, cwd=REPO, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    stage = json.loads((tmp_path / "two" / "stage.json").read_text())
    kind = {"ddp": "MULTI_CPU", "fsdp": "FSDP"}.get(backend, "DEEPSPEED")
    assert stage["distributed"] == kind and stage["processes"] == 2
    assert stage["frozen_rows_unchanged"] is True
    a, b = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], abs=1e-5)
    reference, after = load_file(tmp_path / "one" / "final" / "model.safetensors"), load_file(
        tmp_path / "two" / "final" / "model.safetensors")  # fmt: skip
    assert set(after) == set(reference)
    for key in after:
        torch.testing.assert_close(after[key], reference[key], rtol=0, atol=1e-6)
    _assert_only_new_rows_trained(load_file(model / "model.safetensors"), after, 600)
    if backend in ("deepspeed-zero3", "fsdp") and model_fixture == "tiny_untied_padded":
        # as if killed after the step-2 checkpoint (back to the runner's unfinished work folder, the
        # final outputs gone): resuming the sharded run ends bit-identical
        from langadapt.runs import STARTED_JSON, work_folder, write_json_atomic

        work = work_folder(tmp_path / "two")
        os.replace(tmp_path / "two", work)
        for name in ("DONE", "stage.json", "final"):
            shutil.rmtree(work / name) if name == "final" else (work / name).unlink()
        write_json_atomic(work / STARTED_JSON, {"stage": "pretrain", "config": stage["config"]})
        again = subprocess.run(launch_two, env=ENV, capture_output=True, text=True, cwd=REPO, check=False)
        assert again.returncode == 0, again.stderr[-3000:]
        resumed = load_file(tmp_path / "two" / "final" / "model.safetensors")
        assert all(torch.equal(resumed[k], after[k]) for k in after)


def test_distill_ddp_two_processes_match_one(tmp_path, tiny_untied_padded, bytelevel_tok, hu_texts):
    """embeddings distill under ``accelerate launch`` (DDP on gloo): each process reads its contiguous share
    of every step's spans and the losses are normalised over the whole step, so 2 processes = 1."""
    import ext_tok
    import tiny

    from langadapt.config import InitConfig
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    tok = ext_tok.extend_tokenizer(bytelevel_tok, hu_texts, tmp_path / "tok", 150)
    init = tmp_path / "init"
    run_stage(BY_NAME["init"], InitConfig(model=str(tiny_untied_padded), tokenizer=str(tok), kl_max_docs=2), init)
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts)
    args = ["-m", "langadapt.cli", "embeddings", "distill", "--model", str(init), "--teacher", str(tiny_untied_padded),
            "--corpus", str(corpus), "--steps", "4", "--calibrate-steps", "3", "--batch-size", "4", "--seq-len", "48",
            "--lr", "1e-2", "--checkpoint-every", "2", "--no-bf16", "--report-to", "none"]  # fmt: skip
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=ENV, capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*_launch(None, 29535), *args, "--out", str(tmp_path / "two")], env=ENV, capture_output=True,
                         text=True, cwd=REPO, check=False)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / name / "stage.json").read_text()) for name in ("one", "two"))
    assert (a["processes"], b["processes"]) == (1, 2) and b["frozen_rows_unchanged"] is True
    for stage in ("distill", "calibrate"):
        assert b["losses"][stage] == pytest.approx(a["losses"][stage], abs=1e-5)
    reference, after = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert set(after) == set(reference)
    for key in after:
        torch.testing.assert_close(after[key], reference[key], rtol=0, atol=1e-6)
    assert not (tmp_path / "two" / "checkpoints").exists()
