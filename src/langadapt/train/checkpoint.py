"""Resumable checkpoints: accelerate's ``save_state`` into a temporary folder, metadata last, rename.

A checkpoint ``checkpoints/step-00000040/`` holds what ``Accelerator.save_state`` writes (model,
optimizer, scheduler, the RNG states of python / numpy / torch / CUDA of every process; sharded files
under FSDP and DeepSpeed) plus ``meta.json`` (step, data position, best metric, timings). ``meta.json``
is written last, then the folder is renamed into place: a folder without it (a crash mid-save) is
never resumed from. The data position is the optimizer step: the row order is a pure function of the
seed and the step (see batches.py), so nothing about a data loader needs saving.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from langadapt.runs import write_json_atomic

META = "meta.json"
PREFIX = "step-"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints (with meta.json), oldest first."""
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / META).exists()]
    return sorted(found, key=lambda p: p.name)


def latest(root: Path) -> tuple[Path, dict[str, Any]] | None:
    done = complete_checkpoints(root)
    if not done:
        return None
    return done[-1], json.loads((done[-1] / META).read_text(encoding="utf-8"))


def save(accelerator: Any, root: Path, step: int, meta: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` atomically on every process; keep the ``keep`` newest."""
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # a crash mid-save left it behind
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / META, {**meta, "step": step})  # the commit point
        _fsync_dir(tmp)
        if final.exists():  # same step saved before a crash that lost later steps
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Any, folder: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return the checkpoint's meta.json."""
    accelerator.load_state(str(folder))
    return json.loads((folder / META).read_text(encoding="utf-8"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
