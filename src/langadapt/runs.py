"""Run folders: atomic outputs, DONE markers and the records every artifact carries.

Every stage writes into a temporary sibling folder and renames it into place only when it finished, so
a crash never leaves a half-written artifact behind (the OLMo-core / datatrove pattern). ``stage.json``
says what ran, with which config and langadapt version, how long it took and its key figures; ``DONE``
is written last and is what the recipe runner checks to skip a finished stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt import __version__
from langadapt.errors import UserError

if TYPE_CHECKING:
    from typing_extensions import Self

DONE = "DONE"
STAGE_JSON = "stage.json"


def is_done(folder: Path) -> bool:
    """A stage folder is finished when its DONE marker exists."""
    return (Path(folder) / DONE).exists()


def mark_done(folder: Path) -> None:
    write_text_atomic(Path(folder) / DONE, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name and a rename, so readers never see half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def provenance() -> dict[str, Any]:
    """The langadapt version (and git commit when run from a checkout) that made an artifact."""
    info: dict[str, Any] = {"langadapt_version": __version__}
    with contextlib.suppress(Exception):
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False)  # fmt: skip
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    return info


def write_stage_json(folder: Path, stage: str, config: Any, seconds: float, **figures: Any) -> dict:
    """Record what a stage did in ``folder/stage.json``; returns the record."""
    record = {
        "stage": stage,
        **provenance(),
        "seconds": round(seconds, 3),
        "config": to_jsonable(config),
        **to_jsonable(figures),
    }
    write_json_atomic(Path(folder) / STAGE_JSON, record)
    return record


def check_new_output(out: Path) -> None:
    """The output folder must not exist yet (for stages that check before their slow work starts)."""
    if Path(out).exists():
        raise UserError("output folder already exists (choose another --out or remove it)", out)


@contextlib.contextmanager
def atomic_output_dir(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; rename it to ``out`` when the block succeeds.

    On any exception the temporary folder is removed and ``out`` is untouched. An existing ``out`` is
    a user error unless ``overwrite`` is set (then it is replaced only after the new one is complete).
    """
    out = Path(out)
    if not overwrite:
        check_new_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Self:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    def elapsed(self) -> float:
        """Seconds so far (inside the block), or the total (after it)."""
        return self.seconds or time.perf_counter() - self.start
