"""``corpus prepare``: the datatrove pipeline that cleans, filters and deduplicates raw text.

Stages (each a datatrove executor run with its own ``completions/``, chained with ``depends=``):

    filter      read → normalise → script ratio → language id → quality → repeated paragraphs → (sigs)
    boilerplate count paragraph hashes per partition                       [if boilerplate_filter]
    clean       drop boilerplate paragraphs → too short again → (sigs)     [if boilerplate_filter]
    exact_find  ExactFindDedups                                            [if exact_dedup]
    exact       ExactDedupFilter → (MinHash signatures)                    [if exact_dedup]
    mh_buckets, mh_cluster, minhash: datatrove's MinHash stages 2–4        [if minhash_dedup]
    finalize    stage.json, DATACARD.md, rename into place, DONE

Everything is staged in ``.<out>.work/`` beside ``out``; a relaunch with the same settings skips every
finished task (datatrove's completion markers) and ``out`` appears only when all is done, DONE last.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.config import PrepareConfig
from langadapt.corpus import scripts
from langadapt.errors import UserError
from langadapt.runs import STAGE_JSON, is_done, to_jsonable, write_json_atomic

SHARDS = "shards"


def output_files(out: Path) -> list[str]:
    """The shards later stages read: a glob, so it can be planned before the stage ran."""
    return [str(Path(out) / SHARDS / "*")]


def work_dir(out: Path) -> Path:
    """Where a run is staged (kept between launches, so a relaunch resumes)."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def minhash_bands_rows(cfg: PrepareConfig) -> tuple[int, int]:
    """The (bands, rows) a run uses: set explicitly, or derived from the threshold."""
    if cfg.minhash_buckets:
        return cfg.minhash_buckets, cfg.minhash_rows
    return minhash_params(cfg.minhash_threshold)


def minhash_params(threshold: float) -> tuple[int, int]:
    """(bands, rows) for LSH at ``threshold``: the fewest hashes for which a pair at threshold + 0.1 is
    found with probability >= 0.99 and a pair at threshold - 0.3 with probability <= 0.01.
    Detection probability of a pair with Jaccard s: 1 - (1 - s**rows) ** bands. 0.8 gives 13 x 11."""
    hi, lo = min(threshold + 0.1, 0.97), max(threshold - 0.3, 0.05)
    best = None
    for bands in range(1, 257):
        for rows in range(1, 41):
            if bands * rows > 1024:
                break
            if (
                detection_probability(hi, bands, rows) >= 0.99
                and detection_probability(lo, bands, rows) <= 0.01
            ):
                key = (bands * rows, abs(detection_probability(threshold, bands, rows) - 0.5))
                if best is None or key < best[0]:
                    best = (key, bands, rows)
    if best is None:
        raise UserError(f"no MinHash bands/rows reach minhash_threshold {threshold}; set them by hand")
    return best[1], best[2]


def detection_probability(s: float, bands: int, rows: int) -> float:
    return 1 - (1 - s**rows) ** bands


# ---------------------------------------------------------------------------------------- validation


def resolve_inputs(patterns: list[str], text_field: str) -> list[str]:
    """Expand globs and check that every file starts with readable text (UserError naming the file)."""
    from langadapt.corpus.readers import expand_paths, iter_documents

    if not patterns:
        raise UserError("no --input given")
    files = [str(p) for p in expand_paths(patterns)]
    for path in files:
        # Reads the first document only: a 1 TB input is checked in milliseconds. Later bad lines are
        # skipped by datatrove's readers with a warning.
        if next(iter_documents([path], text_field, max_docs=1), None) is None:
            raise UserError("holds no text", path)
    return [str(Path(f).resolve()) for f in dict.fromkeys(files)]


def check_language(cfg: PrepareConfig) -> None:
    if not cfg.lang:
        raise UserError("no language given (--lang or the recipe's target_lang)")
    scripts.scripts_for(cfg.lang)
    if cfg.language_id and cfg.lang not in scripts.langid_languages():
        raise UserError(f"py3langid cannot identify {cfg.lang!r}: set language_id: false")


def _check_out(cfg: PrepareConfig, out: Path) -> dict | None:
    """A finished run with the same settings is returned as is; any other non-empty ``out`` is an error."""
    if (out / STAGE_JSON).exists():
        record = json.loads((out / STAGE_JSON).read_text(encoding="utf-8"))
        if record.get("config") == to_jsonable(cfg):
            # Renamed into place but DONE missing (a crash in between): the finalize task adds it.
            return record if is_done(out) else None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            "output folder already holds another run's files (choose another --out or remove it)", out
        )
    return None


def _check_work(cfg: PrepareConfig, files: list[str], work: Path) -> None:
    """Resume only a work folder started with the same settings and inputs."""
    record = {"config": to_jsonable(cfg), "files": files}
    marker = work / "run.json"
    if marker.exists():
        if json.loads(marker.read_text(encoding="utf-8")) != record:
            raise UserError(
                "holds an unfinished run with other settings or inputs (remove it to start over)", work
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, record)


# --------------------------------------------------------------------------------------------- entry


def prepare(cfg: PrepareConfig, out: Path) -> dict:
    """Run (or resume) the pipeline into ``out``; returns the stage.json record.

    With the slurm or ray executor the jobs are submitted and this returns once they are launched
    (slurm) or finished (ray); the finalize job writes ``out`` and DONE.
    """
    from langadapt.corpus.plan import build_stages, make_executors

    out = Path(out).resolve()
    check_language(cfg)
    if (done := _check_out(cfg, out)) is not None:
        return done
    files = resolve_inputs(cfg.input, cfg.text_field)
    work = work_dir(out)
    _check_work(cfg, files, work)
    stages = build_stages(cfg, files, work, out, started=time.time())
    executors = make_executors(cfg, stages, work)
    with _console_to_file(cfg, work / "console.log"):
        executors[-1].run()  # runs (or submits) every earlier stage through depends=
    if cfg.executor == "slurm":
        return {"stage": "prepare", "submitted": True, "logs": str(work / "logs")}
    if not is_done(out):
        raise RuntimeError(f"corpus prepare ended without finishing {out}; see {work / 'logs'}")
    shutil.rmtree(work, ignore_errors=True)
    return json.loads((out / STAGE_JSON).read_text(encoding="utf-8"))


@contextlib.contextmanager
def _console_to_file(cfg: PrepareConfig, path: Path):
    """Send datatrove's console logging (INFO per block and task, hard-wired) to a file on local runs.

    datatrove's task logger adds a loguru sink on ``sys.stderr`` in every task, in this process and in
    its worker processes, so the redirect is done on file descriptor 2, which workers inherit; its own
    per-task log files are kept as well. Cluster executors keep their logs in their job folders.
    """
    if cfg.executor != "local":
        yield
        return
    from loguru import logger

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 2)
        logger.remove()  # loguru's default sink holds the stderr object of import time
        logger.add(sys.stderr, level="INFO")
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logger.remove()
            logger.add(sys.stderr, level="WARNING")


def print_summary(record: dict, stream: Any = sys.stdout) -> None:
    """A few lines for the terminal: documents and bytes kept, and the biggest removals."""
    if record.get("submitted"):
        print(f"submitted; logs in {record['logs']}", file=stream)
        return
    o, i = record["output"], record["input"]
    print(f"kept {o['documents']}/{i['documents']} documents, {o['bytes'] / 1e6:.2f}/{i['bytes'] / 1e6:.2f} MB "
          f"in {record['seconds']:.1f} s -> {record['output']['shards']} shard(s)", file=stream)  # fmt: skip
    for step in record["steps"]:
        if step["docs_in"] != step["docs_out"] or step["bytes_in"] != step["bytes_out"]:
            reasons = ", ".join(f"{k} {v}" for k, v in step["dropped"].items())
            print(f"  {step['step']:<12} -{step['docs_in'] - step['docs_out']} docs "
                  f"-{(step['bytes_in'] - step['bytes_out']) / 1e3:.1f} kB  {reasons}", file=stream)  # fmt: skip


@dataclass
class Stage:
    """One datatrove executor run: its pipeline and how many tasks it has."""

    name: str
    pipeline: list
    tasks: int
    steps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Logical step -> the (stage, datatrove block name) pairs whose stats and time it reports."""


def local_workers(cfg: PrepareConfig, tasks: int) -> int:
    workers = (os.cpu_count() or 1) if cfg.workers == -1 else cfg.workers
    return max(1, min(workers, tasks))
