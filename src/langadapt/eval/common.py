"""What every evaluation stage shares: the file names it writes, the model labels, and the one per-model
loop (:func:`each_model`: check the models, resolve their paths, pick the device and the bf16 rule, load
each model with its own tokenizer, free it after use).

A new evaluation stage is its config, an entry built on :func:`each_model` that writes
:data:`RESULTS_JSON` (and :data:`SAMPLES_JSONL`), one line in :mod:`langadapt.stages`, one plan line in
:mod:`langadapt.pipeline` and one report section.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langadapt.errors import UserError
from langadapt.models import load_tokenizer, resolve_dtype, resolve_model
from langadapt.runtime import load_model, resolve_device, use_bf16

if TYPE_CHECKING:
    import torch

RESULTS_JSON = "results.json"
"""What an eval stage (choice, translate, samples, chat) writes: every model's scores and what they depend on."""
SAMPLES_JSONL = "samples.jsonl"
"""What an eval stage writes: one line per item and model (prompt, output or choices, reference)."""
METRICS_JSON = "metrics.json"
"""What ``eval bpb`` writes: every model's figures on every held-out corpus."""
TASK_JSONL = "task.jsonl"
"""What ``eval make-choice`` writes (the ``--task`` of ``eval choice``)."""


def model_labels(models: list[str], first: str | None = "base") -> list[str]:
    """Short, distinct names for the models compared: ``first`` for the first (the reference; None: its
    own name), the stage folder for the others (:func:`model_label`), the path where two would share one."""
    labels: list[str] = []
    for i, name in enumerate(models):
        label = first if i == 0 and first is not None else model_label(name)
        labels.append(str(name) if label in labels else label)  # e.g. two runs' pretrain/final
    return labels


def model_label(path: str) -> str:
    """Short names for the models of a run: the stage folder (``pretrain/final`` -> ``pretrain``)."""
    p = Path(path)
    if p.name == "final":
        return p.parent.name
    return {"model": "init"}.get(p.name, p.name) if p.exists() else str(path)


class EvalSettings(Protocol):
    """What the per-model loop reads of an eval stage's config."""

    models: list[str]
    device: str
    bf16: bool | None


@dataclass
class Loaded:
    """One model of the loop, loaded: ``model`` is dropped when the loop moves on."""

    label: str
    name: str
    path: Path
    model: Any
    tokenizer: Any


class EvalModels:
    """The models an eval stage compares (:func:`each_model`); iterate to load them one at a time."""

    def __init__(self, cfg: EvalSettings, stage: str, first: str | None, dtype: str) -> None:
        if not cfg.models:
            raise UserError(f"{stage} needs at least one model (--models)")
        self.cfg, self.first, self.dtype = cfg, first, dtype
        self.names = list(cfg.models)
        self.labels = model_labels(self.names, first)
        self.paths: list[Path] = []
        self.device: torch.device | None = None
        self.bf16 = False

    def resolve(self) -> EvalModels:
        """Resolve every model's path (fail on a missing model before any work), the device and bf16."""
        if not self.paths:
            self.paths = [resolve_model(m) for m in self.names]
            self.device = resolve_device(self.cfg.device)
            self.bf16 = use_bf16(self.cfg.bf16, self.device)
        return self

    def __iter__(self) -> Iterator[Loaded]:
        self.resolve()
        for name, path, label in zip(self.names, self.paths, self.labels):
            model = load_model(path, self.device, dtype=resolve_dtype(self.dtype, path))
            loaded = Loaded(label, name, path, model, load_tokenizer(path))
            del model  # the loop's only reference is loaded.model, dropped below
            yield loaded
            loaded.model = None  # freed before the next model is loaded


def each_model(cfg: EvalSettings, stage: str, *, first: str | None = "base", dtype: str = "float32") -> EvalModels:
    """The per-model loop of an eval stage: checks at once that ``cfg.models`` names a model (``stage``
    words the error); :meth:`EvalModels.resolve` resolves the paths, device and bf16; iterating loads
    each model in ``dtype`` (a stage's ``dtype`` option: ``auto`` = as stored) and its tokenizer in turn
    (labels: :func:`model_labels` with ``first``)."""
    return EvalModels(cfg, stage, first, dtype)
