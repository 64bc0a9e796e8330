"""``train pretrain``: continual pretraining on packed, document-masked rows, one loop on accelerate.

The same code runs as a single process (CPU by default) and under ``accelerate launch`` with the configs
in ``configs/accelerate/`` (DDP, FSDP, DeepSpeed ZeRO-2/3). The run folder ``out`` (computed in
``.<out>.partial/`` and renamed when finished, by the stage runner)::

    metrics.jsonl        one record per step and per evaluation
    checkpoints/step-N/  accelerate state + meta.json (the last ``keep_checkpoints``)
    best/                HF folder of the best evaluated weights (when evaluation ran)
    final/               HF folder with tokenizer: the best evaluated weights, else the last
    stage.json, DONE     written last

An unfinished run of the same config (the runner refuses another) resumes from its newest checkpoint
(model, optimizer, scheduler, every RNG, data position) and ends bit-identical to an uninterrupted run
on CPU; a finished one is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.config import PretrainConfig
from langadapt.data.reader import PackedDataset, check_tokenizer
from langadapt.errors import UserError
from langadapt.models import resolve_model
from langadapt.train.evaluation import load_eval_texts
from langadapt.train.loop import Trainer


@dataclass
class Inputs:
    model_dir: Path
    dataset: Any
    """The PackedDataset."""
    eval_texts: dict[str, list[str]]


def pretrain(cfg: PretrainConfig, out: Path) -> dict[str, Any]:
    """Stage entry: train ``cfg.model`` on ``cfg.data`` in work folder ``out`` (resumed from its newest
    checkpoint when there is one); return the figures for stage.json."""
    out = Path(out)
    inputs = check_inputs(cfg, out)

    trainer = Trainer(cfg, out, inputs.model_dir, inputs.dataset, inputs.eval_texts)
    summary = trainer.run()
    final = trainer.write_final(out / "final", summary)
    acc = trainer.accelerator
    acc.wait_for_everyone()
    acc.end_training()
    return {**summary, "final": final}


def check_inputs(cfg: PretrainConfig, out: Path) -> Inputs:
    """Every bad-input check that needs no training, before anything is written."""
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


def _model_context(model_dir: Path) -> int | None:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("max_position_embeddings")
