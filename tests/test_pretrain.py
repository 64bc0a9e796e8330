"""train pretrain: what trains, bad input, resume after kill -9 (bitwise), final/ and metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pretrain_fixtures as pf
import pytest
import tiny
import torch

from langadapt.config import PretrainConfig
from langadapt.errors import UserError
from langadapt.runs import work_folder
from langadapt.train import monitor
from langadapt.train.monitor import installed, read_metrics

SEQ = 48


@pytest.fixture(scope="module")
def packed(tmp_path_factory, bytelevel_tok, hu_texts, en_texts) -> Path:
    return pf.write_packed(tmp_path_factory.mktemp("packed") / "p", bytelevel_tok, hu_texts[:60] + en_texts[:30], SEQ)


def _cfg(model: Path, data: Path, **kw) -> PretrainConfig:
    base = {"model": str(model), "data": str(data), "bf16": False, "micro_batch": 2, "lr": 1e-3, "max_steps": 4,
            "warmup": 1}
    return PretrainConfig(**{**base, **kw})


def pretrain(cfg: PretrainConfig, out: Path) -> dict:
    """Through the stage runner (skip, refuse, resume, stage.json), as the CLI and the recipes run it."""
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    return run_stage(BY_NAME["pretrain"], cfg, out)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_full_run_writes_final_metrics_and_skips_when_done(tmp_path, tiny_tied, packed):
    cfg = _cfg(tiny_tied, packed, max_steps=3, eval_target=[str(tiny.write_jsonl(tmp_path / "hu.jsonl",
               tiny.demo_texts("hu", "valid", 4)))], eval_every=2)  # fmt: skip
    record = pretrain(cfg, tmp_path / "run")
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") != "eval"]
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "eval"]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["step"] for r in evals] == [2, 3]
    assert record["final"]["weights"] == "best" and record["final"]["step"] in (2, 3)
    assert (tmp_path / "run" / "final" / "tokenizer.json").exists() and (tmp_path / "run" / "DONE").exists()
    before = (tmp_path / "run" / "stage.json").read_text()
    assert pretrain(cfg, tmp_path / "run")["steps"] == 3  # DONE: skipped, nothing rewritten
    assert (tmp_path / "run" / "stage.json").read_text() == before


@pytest.mark.parametrize("spec", ["embeddings", "new-embeddings", "layers.1.mlp", "new-embeddings,layers.1"])
def test_what_trains(tmp_path, tiny_untied_padded, packed, spec):
    base = 500  # pretend rows >= 500 were added by `tokenizer extend`
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    for f in tiny_untied_padded.iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    (model_dir / "extension.json").write_text(json.dumps({"base_vocab_size": base}))
    before = _weights(model_dir)
    pretrain(_cfg(model_dir, packed, train=spec, max_steps=2), tmp_path / "run")
    after = _weights(tmp_path / "run" / "final")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    emb = {"model.embed_tokens.weight", "lm_head.weight"}
    if spec == "layers.1.mlp":
        assert changed and all(".layers.1.mlp." in k for k in changed)
        return
    if spec == "new-embeddings,layers.1":  # a union: block 1 and the new embedding rows
        assert changed - emb and all(".layers.1." in k for k in changed - emb)
    else:
        assert changed == emb
    if spec.startswith("new-embeddings"):
        from transformers import AutoTokenizer

        n_tok = len(AutoTokenizer.from_pretrained(model_dir))
        for k in emb:  # base rows and padding rows bit-identical, new rows trained
            assert torch.equal(before[k][:base], after[k][:base])
            assert torch.equal(before[k][n_tok:], after[k][n_tok:])
            assert not torch.equal(before[k][base:n_tok], after[k][base:n_tok])


def test_bad_input(tmp_path, tiny_tied, packed, metaspace_tok, hu_texts):
    other = pf.write_packed(tmp_path / "other", metaspace_tok, hu_texts[:20], SEQ)
    with pytest.raises(UserError, match="another tokenizer"):
        pretrain(_cfg(tiny_tied, other), tmp_path / "r1")
    long = pf.write_packed(tmp_path / "long", tiny_tied, hu_texts[:40], 4096)
    with pytest.raises(UserError, match="above the model's context"):
        pretrain(_cfg(tiny_tied, long), tmp_path / "r2")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    assert not work_folder(tmp_path / "r1").exists() and not work_folder(tmp_path / "r2").exists()
    pretrain(_cfg(tiny_tied, packed, max_steps=1), tmp_path / "r3")
    snapshot = {p: p.stat().st_mtime_ns for p in (tmp_path / "r3").rglob("*")}
    with pytest.raises(UserError, match="finished pretrain run of another config"):
        pretrain(_cfg(tiny_tied, packed, max_steps=1, lr=5e-4), tmp_path / "r3")
    assert snapshot == {p: p.stat().st_mtime_ns for p in (tmp_path / "r3").rglob("*")}


def _cli(model: Path, data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "langadapt.cli", "train", "pretrain", "--model", str(model), "--data", str(data),
            "--out", str(out), "--max-steps", str(steps), "--checkpoint-every", "5", "--no-bf16",
            "--micro-batch", "2", "--lr", "1e-3", "--warmup", "2"]  # fmt: skip


def test_resume_after_kill_9_is_bitwise_identical(tmp_path, tiny_tied, packed):
    steps = 60
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(tiny_tied, packed, tmp_path / "straight", steps), check=True, env=env,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(tiny_tied, packed, out, steps), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not list((work_folder(out) / "checkpoints").glob("step-*/meta.json")) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "DONE").exists(), "the run finished before it could be killed"
    subprocess.run(_cli(tiny_tied, packed, out, steps), check=True, env=env, capture_output=True)
    losses = [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl")]
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "straight" / "metrics.jsonl")]
    a, b = _weights(out / "final"), _weights(tmp_path / "straight" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a finished folder rerun with another config: one line, exit 2, nothing touched
    result = subprocess.run(_cli(tiny_tied, packed, out, steps + 1), capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2 and "finished pretrain run of another config" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_base_vocab_size_found_through_stage_json(tmp_path):
    from langadapt.train.trainable import base_vocab_size

    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "extension.json").write_text(json.dumps({"base_vocab_size": 49152}))
    for name, key, target in (("model", "tokenizer", "tokenizer"), ("distill", "model", "model")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stage.json").write_text(json.dumps({"config": {key: str(tmp_path / target)}}))
    assert base_vocab_size(tmp_path / "distill") == 49152
    with pytest.raises(UserError, match="extension.json"):
        base_vocab_size(tmp_path / "tokenizer" / "..")  # a folder with neither


def test_gradient_checkpointing_and_accumulation_keep_the_losses(tmp_path, tiny_tied, packed):
    """Recomputation changes nothing; 2 micro-batches of 2 rows = 1 of 4 (loss over the whole step)."""
    runs = {"plain": {"micro_batch": 4}, "ckpt": {"micro_batch": 4, "gradient_checkpointing": True},
            "accum": {"micro_batch": 2, "grad_accum": 2}}  # fmt: skip
    losses = {}
    for name, kw in runs.items():
        pretrain(_cfg(tiny_tied, packed, max_steps=3, **kw), tmp_path / name)
        losses[name] = [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")]
    assert losses["ckpt"] == pytest.approx(losses["plain"], abs=1e-6)
    assert losses["accum"] == pytest.approx(losses["plain"], abs=1e-5)


@pytest.mark.slow  # inductor compiles the tiny model on CPU: ~15-30 s
def test_compile_gives_the_same_run(tmp_path, tiny_tied, packed):
    for comp in (False, True):
        pretrain(_cfg(tiny_tied, packed, max_steps=2, compile=comp), tmp_path / str(comp))
    a, b = (read_metrics(tmp_path / str(c) / "metrics.jsonl") for c in (False, True))
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-5)
    wa, wb = _weights(tmp_path / "False" / "final"), _weights(tmp_path / "True" / "final")
    assert wa.keys() == wb.keys()  # no "_orig_mod." prefixes in final/


@pytest.mark.skipif(not installed("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_gets_every_step(tmp_path, tiny_tied, packed):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pretrain(_cfg(tiny_tied, packed, max_steps=3, report_to="tensorboard"), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "pretrain")).Reload()
    logged = {e.step: e.value for e in events.Scalars("loss")}
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") != "eval"]
    assert sorted(logged) == [1, 2, 3]
    assert [logged[r["step"]] for r in steps] == pytest.approx([r["loss"] for r in steps], rel=1e-6)


def test_report_to_none_and_a_missing_tracker(tmp_path, tiny_tied, packed, monkeypatch):
    pretrain(_cfg(tiny_tied, packed, max_steps=1, report_to="none"), tmp_path / "quiet")
    assert not (tmp_path / "quiet" / "pretrain").exists()
    monkeypatch.setitem(monitor.TRACKER_PACKAGES, "wandb", ("langadapt_no_such_package",))
    with pytest.raises(UserError, match="report_to 'wandb': the package is not installed"):
        pretrain(_cfg(tiny_tied, packed, max_steps=1, report_to="wandb"), tmp_path / "r")
    assert not (tmp_path / "r").exists() and not work_folder(tmp_path / "r").exists()


def test_row_freeze_callback_in_a_transformers_trainer(tmp_path, tiny_untied_padded):
    """The same gradient mask as a TrainerCallback (for trl / transformers SFT and DPO): rows < 500 and
    the padding rows stay bit-identical, the new rows train."""
    from accelerate.state import AcceleratorState
    from transformers import Trainer, TrainingArguments

    from langadapt.models import load_model
    from langadapt.train import optim, trainable

    base, end = 500, 600
    model = load_model(tiny_untied_padded)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    selection = trainable.select(model, "new-embeddings", vocab_size=end, base_vocab=base)
    callback = trainable.RowFreezeCallback(selection.row_freeze)
    groups = optim.param_groups(model, 0.1, trainable.embedding_matrices(model))
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    ids = torch.arange(8 * 16).reshape(8, 16) * 7 % end  # base and new token ids
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=4, report_to=[],
                             save_strategy="no", use_cpu=True, logging_strategy="no", disable_tqdm=True)  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None), callbacks=[callback]).train()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert callback.unchanged is True
    after = model.state_dict()
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(after[key][:base], before[key][:base]), key
        assert torch.equal(after[key][end:], before[key][end:]), key
        assert not torch.equal(after[key][base:end], before[key][base:end]), key
