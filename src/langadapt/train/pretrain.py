"""``train pretrain``: continual pretraining on packed, document-masked rows, one loop on accelerate.

The same code runs as a single process (CPU by default) and under ``accelerate launch`` with the configs
in ``configs/accelerate/`` (DDP, FSDP, DeepSpeed ZeRO-2/3). The run folder ``out``::

    config.json          the resolved PretrainConfig (a rerun with another config is refused)
    metrics.jsonl        one record per step and per evaluation
    checkpoints/step-N/  accelerate state + meta.json (the last ``keep_checkpoints``)
    best/                HF folder of the best evaluated weights (when evaluation ran)
    final/               HF folder with tokenizer: the best evaluated weights, else the last
    stage.json, DONE     written last

An unfinished folder is resumed from its newest checkpoint (model, optimizer, scheduler, every RNG,
data position) and ends bit-identical to an uninterrupted run on CPU; a finished one is skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.config import PretrainConfig
from langadapt.errors import UserError
from langadapt.runs import STAGE_JSON, is_done, mark_done, to_jsonable, write_json_atomic, write_stage_json

CONFIG_JSON = "config.json"
RUNTIME_ONLY = ("max_minutes", "report_to")
"""Config fields that may change between a run and its resume."""


@dataclass
class Inputs:
    model_dir: Path
    dataset: Any
    """The PackedDataset."""
    eval_texts: dict[str, list[str]]


def pretrain(cfg: PretrainConfig, out: Path) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` into run folder ``out``; return the stage.json record."""
    out = Path(out)
    check_same_config(cfg, out)  # before the DONE skip: a finished run of another config is no answer
    if is_done(out):
        return json.loads((out / STAGE_JSON).read_text(encoding="utf-8"))
    inputs = check_inputs(cfg, out)
    started = time.time()
    from langadapt.train.loop import Trainer

    trainer = Trainer(cfg, out, inputs.model_dir, inputs.dataset, inputs.eval_texts)
    summary = trainer.run()
    final = trainer.write_final(out / "final", summary)
    acc = trainer.accelerator
    record = {**summary, "final": final}
    if acc.is_main_process:
        record = write_stage_json(out, "pretrain", cfg, time.time() - started, **record)
        mark_done(out)
    acc.wait_for_everyone()
    acc.end_training()
    return record


def check_inputs(cfg: PretrainConfig, out: Path) -> Inputs:
    """Every bad-input check that needs no training, before anything is written."""
    from langadapt.data.reader import PackedDataset, check_tokenizer
    from langadapt.models import resolve_model
    from langadapt.train.evaluation import load_eval_texts

    if not cfg.model or not cfg.data:
        raise UserError("pretrain needs a model and a packed data folder")
    model_dir = resolve_model(cfg.model)
    dataset = PackedDataset(cfg.data)
    check_tokenizer(cfg.data, model_dir)
    context = _model_context(model_dir)
    if context is not None and dataset.seq_len > context:
        raise UserError(f"packed seq_len {dataset.seq_len} is above the model's context ({context} tokens)",
                        cfg.data)  # fmt: skip
    return Inputs(model_dir, dataset, load_eval_texts(cfg))


def check_same_config(cfg: PretrainConfig, out: Path) -> None:
    """An existing run folder must hold a run of this same config (``RUNTIME_ONLY`` fields aside)."""
    recorded = out / CONFIG_JSON
    if recorded.exists():
        before = json.loads(recorded.read_text(encoding="utf-8"))
        now = to_jsonable(cfg)
        changed = sorted(k for k in set(before) | set(now)
                         if k not in RUNTIME_ONLY and before.get(k) != now.get(k))  # fmt: skip
        if changed:
            raise UserError(f"resume folder from a different config (changed: {', '.join(changed)})", out)
    elif out.exists() and any(out.iterdir()):
        raise UserError("output folder is not a pretrain run folder (no config.json); choose another", out)


def _model_context(model_dir: Path) -> int | None:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("max_position_embeddings")


def record_config(cfg: PretrainConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG_JSON).exists():
        write_json_atomic(out / CONFIG_JSON, cfg)
