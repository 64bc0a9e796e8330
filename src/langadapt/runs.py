"""Run folders: the one stage protocol, atomic outputs, DONE markers and the records every artifact carries.

:func:`run_stage` is the protocol every stage goes through, from the CLI and from a recipe alike
(datatrove's executor and OLMo-core's checkpointer are the models): the stage function only computes
into a work folder ``.<out>.partial/`` beside ``out``; the runner

* returns a finished ``out`` of the same config as it is (skipped), and refuses one of another config
  with one line naming the differing keys (a ``rebuild`` stage, derived from other stages' records,
  computes anew and replaces a finished ``out`` at the commit);
* resumes an unfinished work folder of the same config where the stage can resume (it keeps its
  checkpoints there), refuses one of another config, and starts over where the stage cannot resume;
* records the config the work started with (``started.json``), then ``stage.json`` (resolved config,
  langadapt version, git commit, seconds, the stage's figures) and ``DONE`` last, and renames the work
  folder to ``out`` — so a crash never leaves a half-written artifact where a finished one belongs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt import __version__
from langadapt.errors import UserError

if TYPE_CHECKING:
    from typing_extensions import Self

DONE = "DONE"
STAGE_JSON = "stage.json"
STARTED_JSON = "started.json"
"""In a work folder: the config (and langadapt version) the unfinished run started with."""
EXTENSION_JSON = "extension.json"
METRICS_JSONL = "metrics.jsonl"
"""In a training run folder: one JSON record per optimizer step and per evaluation."""
"""In a tokenizer folder (and the model folders made from it): base_vocab_size, the added tokens, fertility."""


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


def write_jsonl_atomic(path: Path, records: Iterable[Any]) -> None:
    """One JSON object a line (UTF-8 as is), written as :func:`write_text_atomic` writes."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


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
    replace_folder(tmp, out)


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


# ------------------------------------------------------------------------------------ the protocol


def work_folder(out: Path) -> Path:
    """Where a stage computes before its output is committed (kept after a crash, for resuming)."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def is_main_process() -> bool:
    """Rank 0 of an ``accelerate launch`` / torchrun job, or a plain process: the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


def changed_keys(before: dict[str, Any], now: dict[str, Any], ignore: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None) -> list[str]:  # fmt: skip
    """Config keys whose values differ (``ignore``: settings that may change without changing results). A
    key ``before`` lacks (an option added by a later langadapt) whose value now is its default
    (``defaults``) is no change: a finished stage stays finished across an upgrade that adds options."""
    defaults = defaults or {}

    def same(k: str) -> bool:
        if k not in before and k in defaults:
            return now.get(k) == defaults[k]
        return before.get(k) == now.get(k)

    return sorted(k for k in set(before) | set(now) if k not in ignore and not same(k))


def config_defaults(cfg: Any) -> dict[str, Any]:
    """A config dataclass's fields that have a default, with it (as stage.json records values)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_jsonable(f.default_factory())
    return out


def record_folders(model_dir: Path) -> list[Path]:
    """The model folder, then the folders its records name, nearest first: a stage's ``stage.json`` (in the
    folder, or beside a training run's ``final/``) names its ``tokenizer`` and ``model`` (init names the
    tokenizer folder, distill and the trainers the model they started from)."""
    seen: list[Path] = []
    todo = [Path(model_dir)]
    while todo:
        folder = todo.pop(0)
        if folder in seen or not folder.is_dir():
            continue
        seen.append(folder)
        for stage_json in (folder / STAGE_JSON, folder.parent / STAGE_JSON):
            if stage_json.is_file():
                config = json.loads(stage_json.read_text(encoding="utf-8")).get("config", {})
                todo += [Path(config[k]) for k in ("tokenizer", "model") if isinstance(config.get(k), str) and config[k]]
                break
    return seen


def extension_records(model_dir: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """Every ``extension.json`` (written by ``tokenizer extend``, copied along by the trainers) among
    :func:`record_folders`, nearest first, with the folder it is in."""
    for folder in record_folders(model_dir):
        if (folder / EXTENSION_JSON).is_file():
            yield json.loads((folder / EXTENSION_JSON).read_text(encoding="utf-8")), folder


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def stage_record(stage: str, config: Any, seconds: float, figures: dict[str, Any]) -> dict[str, Any]:
    """What ``stage.json`` holds: stage name, versions, seconds, the resolved config, the figures."""
    return {"stage": stage, **provenance(), "seconds": round(seconds, 3), "config": to_jsonable(config),
            **to_jsonable(figures)}  # fmt: skip


def commit(work: Path, out: Path, record: dict[str, Any]) -> None:
    """``stage.json`` then ``DONE`` into the work folder, then rename it to ``out`` (the commit point).

    A crash between DONE and the rename leaves a finished work folder, which the next run renames."""
    work, out = Path(work), Path(out)
    write_json_atomic(work / STAGE_JSON, record)
    mark_done(work)
    (work / STARTED_JSON).unlink(missing_ok=True)
    replace_folder(work, out)  # a rebuilt stage: its finished output is replaced only now


def check_finished(name: str, out: Path, config: dict[str, Any], ignore: tuple[str, ...],
                   defaults: dict[str, Any] | None = None) -> dict | None:  # fmt: skip
    """The record of a finished ``out`` of this config; None when ``out`` does not exist; else UserError."""
    out = Path(out)
    if is_done(out) and (out / STAGE_JSON).exists():
        record = read_json(out / STAGE_JSON)
        changed = changed_keys(record.get("config", {}), config, ignore, defaults)
        if changed:
            raise UserError(f"holds a finished {record.get('stage', name)} run of another config (changed: "
                            f"{', '.join(changed)}); choose another output folder or remove it", out)  # fmt: skip
        return record
    if out.exists():
        raise UserError("output folder already exists and is not a finished langadapt stage "
                        "(choose another output folder or remove it)", out)  # fmt: skip
    return None


def prepare_work(name: str, work: Path, config: dict[str, Any], *, resumable: bool,
                 ignore: tuple[str, ...], defaults: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Make the work folder ready; True when an unfinished run of the same config is resumed."""
    started = work / STARTED_JSON
    if work.exists() and resumable and started.exists():
        changed = changed_keys(read_json(started).get("config", {}), config, ignore, defaults)
        if changed:
            raise UserError(f"holds an unfinished {name} run of another config (changed: {', '.join(changed)}); "
                            "remove it to start over", work)  # fmt: skip
        return True
    if is_main_process():
        if work.exists():  # an unfinished run of a stage that cannot resume: start over
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json_atomic(started, {"stage": name, **provenance(), "config": config})
    return False


def run_stage(stage: Any, cfg: Any, out: Path, log: Any = print) -> dict[str, Any]:
    """Run ``stage`` (a :class:`langadapt.stages.Stage`) with ``cfg`` into ``out`` under the protocol above.

    Returns the stage.json record, with ``"skipped": True`` when ``out`` was already finished.
    """
    out = Path(out)
    config = to_jsonable(cfg)
    ignore = tuple(stage.runtime_only)
    # a rebuilt stage's finished output is replaced at the commit, whatever config made it
    rebuild = stage.rebuild and is_done(out)
    defaults = config_defaults(cfg)
    record = None if rebuild else check_finished(stage.name, out, config, ignore, defaults)
    if record is not None:
        return {**record, "skipped": True}
    work = work_folder(out)
    if is_done(work) and is_main_process() and not stage.rebuild:  # committed, then a crash before the rename
        os.replace(work, out)
        return run_stage(stage, cfg, out, log)
    resumed = prepare_work(stage.name, work, config, resumable=stage.resumable, ignore=ignore, defaults=defaults)
    if resumed:
        log(f"[{stage.name}] resuming the unfinished run in {work}")
    try:
        with Timer() as timer:
            figures = stage.function()(cfg, work)
    except BaseException as exc:
        # Bad input leaves nothing behind; a crash or kill keeps a resumable stage's checkpoints.
        keep = stage.resumable and (resumed or not isinstance(exc, UserError))
        if not keep and is_main_process():
            shutil.rmtree(work, ignore_errors=True)
        raise
    if stage.commits_itself:  # datatrove's finalize job commits (on a cluster, after this process is gone)
        return read_json(out / STAGE_JSON) if is_done(out) else {"stage": stage.name, **(figures or {})}
    record = stage_record(stage.name, cfg, timer.seconds, figures or {})
    if is_main_process():
        commit(work, out, record)
    return record


def replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and removed after, so ``out`` is
    always either the old folder or the new one."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)
