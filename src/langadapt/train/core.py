"""The one training core on accelerate: ``train pretrain`` and ``embeddings distill`` run on it (and
SFT/DPO will, or plug :class:`langadapt.train.trainable.RowFreezeCallback` into a transformers Trainer).

* :func:`make_accelerator`: device (``runtime.resolve_device``; ``accelerate launch`` assigns one per
  process), the bf16 rule (``runtime.use_bf16``), gradient accumulation, torch.compile, trackers, and
  the DeepSpeed batch / clipping settings (we feed batches ourselves, so accelerate cannot infer them).
* :class:`TrainCore`: the prepared model / optimizer / scheduler, the row freeze (attached after
  ``prepare``, gradients masked between backward and clipping, checked at the end), one optimizer step
  over micro-batches, checkpoints with exact resume (``checkpoint.py``: model, optimizer, scheduler,
  every RNG, meta.json) and tracker logging.

The loss convention makes accumulation and data parallelism give the same update: a loss function
returns its micro-batch's *share* of the step's loss (a sum over the micro-batch divided by the count
over the whole step, every micro-batch of every process); the core undoes accelerate's ``/ grad_accum``
and DDP's mean, and the step's loss is the sum of the shares over processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langadapt.runtime import resolve_device, use_bf16
from langadapt.train import checkpoint
from langadapt.train.monitor import resolve_trackers
from langadapt.train.trainable import RowFreeze

SETTINGS = ("device", "bf16", "grad_accum", "micro_batch", "grad_clip", "compile", "report_to")
"""What :func:`make_accelerator` reads from a stage config (a config without one gets the default)."""


def accelerator_settings(cfg: Any) -> dict[str, Any]:
    """The :data:`SETTINGS` a config has (PretrainConfig has all, DistillConfig some)."""
    return {k: getattr(cfg, k) for k in SETTINGS if hasattr(cfg, k)}


def make_accelerator(project_dir: Path | None = None, *, device: str = "auto", bf16: bool | None = None,
                     grad_accum: int = 1, micro_batch: int = 1, grad_clip: float = 1.0, compile: bool = False,
                     report_to: str = "none") -> Any:  # fmt: skip
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    reset_single_process_state()
    place = resolve_device(device)
    trackers = resolve_trackers(report_to)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    handlers = []
    if deepspeed and place.type == "cpu":  # accelerate would leave the backend unset: one process each
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    acc = Accelerator(
        mixed_precision="bf16" if use_bf16(bf16, place) else "no",
        gradient_accumulation_steps=grad_accum,
        step_scheduler_with_optimizer=False,  # we step it once per optimizer step, whatever the world size
        dynamo_backend="inductor" if compile else "no",
        log_with=trackers or None,
        # Without cpu=True, torchrun-launched CPU processes would not form a gloo group; with it,
        # accelerate would drop DeepSpeed (which runs on CPU through its own gloo fallback).
        cpu=place.type == "cpu" and not deepspeed,
        project_dir=None if project_dir is None else str(project_dir),
        kwargs_handlers=handlers,
    )
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        # We feed batches ourselves (no DataLoader to infer it from), and the engine clips inside its
        # step, so both come from our config rather than accelerate's "auto".
        plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=grad_accum,
            train_batch_size=micro_batch * grad_accum * acc.num_processes,
            gradient_clipping=max(grad_clip, 0.0),
        )
    return acc


def reset_single_process_state(*, device: bool = False) -> None:
    """One process (tests, the pipeline): let each run choose its own mixed precision (and with ``device``,
    its device: a transformers Trainer sets up the process state itself); the AcceleratorState singleton
    would otherwise keep the first run's."""
    from accelerate.state import AcceleratorState, PartialState

    if PartialState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=device)


def start_trackers(accelerator: Any, project: str, cfg: Any) -> None:
    """init_trackers on the main process (nothing without trackers), the config as strings."""
    accelerator.init_trackers(project, config={k: str(v) for k, v in vars(cfg).items()})


def share(items: list[Any], process: int, processes: int) -> list[Any]:
    """Process ``process``'s contiguous share of one step's items (like batches.StepPlan's rows)."""
    n = len(items)
    return items[process * n // processes : (process + 1) * n // processes]


@dataclass
class StepResult:
    loss: float
    """The step's loss over every process (sum of the micro-batches' shares)."""
    lr: float
    """The learning rate the optimizer step used."""
    grad_norm: float
    """Before clipping (nan when clipping is off)."""


class TrainCore:
    """One prepared (model, optimizer, scheduler); the step, checkpoints and row freeze around it."""

    def __init__(self, accelerator: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, *, grad_clip: float, grad_accum: int = 1,
                 row_freeze: RowFreeze | None = None) -> None:  # fmt: skip
        self.accelerator = acc = accelerator
        self.grad_clip, self.grad_accum = grad_clip, grad_accum
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        self.row_freeze = row_freeze
        if row_freeze is not None:  # after prepare: FSDP2 replaces the parameters (trainable.py)
            row_freeze.attach(self.unwrapped(), deepspeed=acc.distributed_type.value == "DEEPSPEED")

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def step(self, micro_batches: Iterable[Any],
             loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor]) -> StepResult:  # fmt: skip
        """One optimizer step over ``grad_accum`` micro-batches: backward each, then mask the frozen rows,
        clip, step the optimizer and the scheduler. ``loss_fn(model, batch)``: the micro-batch's share."""
        acc = self.accelerator
        scale = self.grad_accum * acc.num_processes  # undo accelerate's / grad_accum and DDP's mean
        loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
        grad_norm = lr = None
        for batch in micro_batches:
            with acc.accumulate(self.model):
                loss = loss_fn(self.model, batch)
                acc.backward(loss * scale)
                loss_sum += loss.detach().double()
                if acc.sync_gradients:
                    if self.row_freeze is not None:
                        self.row_freeze.mask_grads()
                    if self.grad_clip > 0:
                        grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                    lr = self.scheduler.get_last_lr()[0]
                    self.optimizer.step()
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        if lr is None:
            raise RuntimeError(f"a step needs {self.grad_accum} micro-batches (gradient accumulation)")
        loss_total = acc.reduce(loss_sum, reduction="sum").item()
        return StepResult(loss_total, lr, float(grad_norm) if grad_norm is not None else math.nan)

    # ---------------------------------------------------------------------------------- checkpoints

    def save(self, root: Path, step: int, meta: dict[str, Any], keep: int) -> Path:
        """Checkpoint ``root/step-N`` (every process takes part); keep the ``keep`` newest."""
        return checkpoint.save(self.accelerator, root, step, meta, keep)

    def resume(self, root: Path) -> dict[str, Any] | None:
        """Restore the newest complete checkpoint under ``root``; its meta.json, or None if there is none."""
        found = checkpoint.latest(root)
        return None if found is None else checkpoint.load(self.accelerator, found[0])

    # ------------------------------------------------------------------------------------------ end

    def log(self, record: dict[str, Any], step: int) -> None:
        """The float figures of ``record`` to the trackers (main process; nothing without trackers)."""
        self.accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=step)

    def frozen_rows_unchanged(self) -> bool | None:
        """Frozen rows as at attach (every rank calls it); None without a row freeze."""
        if self.row_freeze is None:
            return None
        ok = self.row_freeze.unchanged()
        if not ok and self.accelerator.is_main_process:
            print("warning: training changed frozen embedding rows (a bug: report it)")
        return ok

    def release(self) -> torch.nn.Module:
        """The bare trained model; the accelerator forgets this core's objects, so another (the next
        stage's, with other trainable parameters) can be prepared on it."""
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False, keep_torch_compile=False)
        self.accelerator.free_memory()
        self.model = self.optimizer = self.scheduler = None
        return model
