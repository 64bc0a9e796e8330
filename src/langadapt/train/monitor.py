"""One log line per step, a rich progress bar, ``metrics.jsonl``, accelerate trackers, and MFU.

``metrics.jsonl`` gets one JSON object per optimizer step (and one per evaluation, ``"kind": "eval"``).
On resume the lines after the checkpoint's step are dropped first, so the file of a resumed run equals
that of an uninterrupted one apart from timings.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from langadapt.config import parse_report_to
from langadapt.errors import UserError
from langadapt.runs import METRICS_JSONL, write_text_atomic

# Dense bf16 peak FLOP/s (no sparsity) by GPU name fragment; MFU is reported only for these.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12,
                 "4090": 165e12, "3090": 71e12, "B200": 2250e12}  # fmt: skip


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def installed(tracker: str) -> bool:
    return any(importlib.util.find_spec(p) for p in TRACKER_PACKAGES[tracker])


def resolve_trackers(report_to: str) -> list[str]:
    """``auto``: every installed tracker; ``none``: []; else the named ones, which must be installed."""
    names = parse_report_to(report_to)
    if names == ["auto"]:
        return [t for t in TRACKER_PACKAGES if installed(t)]
    if names == ["none"]:
        return []
    for name in names:
        if not installed(name):
            package = TRACKER_PACKAGES[name][0]
            raise UserError(f"report_to {name!r}: the package is not installed (pip install {package})")
    return names


def flops_per_token(config: Any, seq_len: int, n_params: int) -> float:
    """Training FLOPs per token, 6N + attention (PaLM appendix B), for dense document-free attention."""
    layers = getattr(config, "num_hidden_layers", 0)
    hidden = getattr(config, "hidden_size", 0)
    return 6 * n_params + 12 * layers * hidden * seq_len


def gpu_peak(device: Any) -> float | None:
    import torch

    if getattr(device, "type", "") != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)


class Monitor:
    """Everything the main process reports; other processes get a Monitor that does nothing."""

    def __init__(self, out: Path, total_steps: int, start_step: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / METRICS_JSONL
        self.progress = None
        if not enabled:
            return
        truncate_metrics(self.path, start_step)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True)  # fmt: skip
        self.task = self.progress.add_task("steps", total=total_steps, completed=start_step)
        self.progress.start()

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if record.get("kind") == "eval":
            line = "eval step {step}: ".format(**record) + ", ".join(
                f"{k} {v:.4f}" for k, v in record.items() if k.endswith("bpb")
            )
        else:
            line = ("step {step}/{total} loss {loss:.4f} lr {lr:.3g} grad_norm {grad_norm:.3g} "
                    "tok/s {tokens_per_s:,.0f}").format(**record)  # fmt: skip
            if record.get("mfu") is not None:
                line += f" mfu {record['mfu']:.1%}"
            self.progress.update(self.task, completed=record["step"])
        self.progress.console.print(line, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the records of steps <= ``step`` (what a resumed run will not redo)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:  # the line a kill -9 cut short
            continue
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
