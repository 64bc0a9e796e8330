"""``corpus prepare``: the datatrove pipeline that cleans, filters and deduplicates raw text.

The stage entry for :func:`langadapt.runs.run_stage` (declared in :mod:`langadapt.stages`): it checks the
input, builds the datatrove stages (corpus/plan.py) and runs or submits them. The last data stage writes
the shards straight into the runner's work folder ``.<out>.partial/``; datatrove's own files (logging
folders with ``completions/``, intermediate shards, signatures) go to ``.<out>.datatrove/`` beside it.
A relaunch with the same config resumes both (datatrove skips every finished task), and the last job
(card.Finalize) commits the work folder to ``out`` itself, so on Slurm ``out`` appears when the jobs are
done, with no process waiting. Modules: prepare → plan → card → minhash.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from langadapt.config import PrepareConfig
from langadapt.corpus import scripts
from langadapt.corpus.card import INPUTS_JSON, SHARDS
from langadapt.corpus.readers import expand_paths, iter_documents
from langadapt.errors import UserError
from langadapt.runs import STAGE_JSON, is_done, read_json, work_folder, write_json_atomic


def output_files(out: Path) -> list[str]:
    """The shards later stages read: a glob, so it can be planned before the stage ran."""
    return [str(Path(out) / SHARDS / "*")]


def final_folder(work: Path) -> Path:
    """The output folder whose runner work folder is ``work`` (``.<out>.partial`` -> ``<out>``)."""
    work = Path(work)
    final = work.with_name(work.name.removeprefix(".").removesuffix(".partial"))
    if work_folder(final) != work:
        raise ValueError(f"{work} is not a stage runner's work folder (.<out>.partial)")
    return final


def scratch_dir(out: Path) -> Path:
    """datatrove's folder for a run into ``out``: logs, completions, intermediate files (kept between
    launches so a relaunch resumes, and after a Slurm submission for its logs)."""
    out = Path(out)
    return out.with_name(f".{out.name}.datatrove")


# ---------------------------------------------------------------------------------------- validation


def resolve_inputs(patterns: list[str], text_field: str) -> list[str]:
    """Expand globs and check that every file starts with readable text (UserError naming the file)."""
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


def _pair_scratch(files: list[str], work: Path, scratch: Path) -> None:
    """Tie datatrove's scratch folder to the runner's work folder, and resume only with the same inputs.

    The runner has checked the config; a glob may match other files now, which it cannot see. A fresh
    work folder (no inputs record yet) gets a fresh scratch folder: datatrove would otherwise skip tasks
    finished by an abandoned run whose shards went with its work folder.
    """
    marker = work / INPUTS_JSON
    if marker.exists():
        if read_json(marker).get("files") != files:
            raise UserError("holds an unfinished run of other input files (the globs match other files now; "
                            "remove it to start over)", work)  # fmt: skip
        return
    shutil.rmtree(scratch, ignore_errors=True)
    write_json_atomic(marker, {"files": files})


# --------------------------------------------------------------------------------------------- entry


def prepare(cfg: PrepareConfig, out: Path) -> dict:
    """Run (or resume) the pipeline in ``out``, the stage runner's work folder; returns stage.json's record.

    With the slurm executor the jobs are submitted and this returns ``{"submitted": True, "logs": ...}``
    once they are launched; the finalize job commits the output. With ray it returns when all is done.
    """
    # Imported here, not at the top: datatrove's pipeline and executor modules take ~0.4 s, and the
    # recipe planner and the CLI's printer import this module only for output_files / print_summary.
    from langadapt.corpus.plan import build_stages, make_executors, ray_cluster, run_executors

    work = Path(out).resolve()
    final = final_folder(work)
    scratch = scratch_dir(final)
    check_language(cfg)
    files = resolve_inputs(cfg.input, cfg.text_field)
    stages = build_stages(cfg, files, staged=work, scratch=scratch, final=final, started=time.time())
    # A Ray cluster that does not answer (or is too small) is bad input too: connect before writing anything.
    with ray_cluster(cfg) if cfg.executor == "ray" else contextlib.nullcontext():
        _pair_scratch(files, work, scratch)  # after the last check of the input: a user error leaves nothing
        with _console_to_file(cfg, scratch / "console.log"):  # the Ray executors warn when built
            run_executors(cfg, make_executors(cfg, stages, scratch))
    if cfg.executor == "slurm":
        return {"submitted": True, "logs": str(scratch / "logs")}
    if not is_done(final):
        raise RuntimeError(f"corpus prepare ended without finishing {final}; see {scratch / 'logs'}")
    shutil.rmtree(scratch, ignore_errors=True)
    return read_json(final / STAGE_JSON)


@contextlib.contextmanager
def _console_to_file(cfg: PrepareConfig, path: Path):
    """Send datatrove's console logging (INFO per block and task, hard-wired) to a file on local and Ray runs.

    datatrove's task logger adds a loguru sink on ``sys.stderr`` in every task, in this process and in
    its worker processes, so the redirect is done on file descriptor 2, which workers inherit; its own
    per-task log files are kept as well. On Ray only the driver's lines (stage launches, the shared-disk
    warning, Ray's own) come here: the tasks' logs go to their stage's logging folder. A Slurm submission
    prints where the jobs' logs are.
    """
    if cfg.executor == "slurm":
        yield
        return
    from loguru import logger

    from langadapt.corpus.plan import stderr_fd_to

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as fh, stderr_fd_to(fh.fileno()):
            logger.remove()  # loguru's default sink holds the stderr object of import time
            logger.add(sys.stderr, level="INFO")
            yield
    finally:  # after fd 2 is back: the sink then writes to the terminal again
        logger.remove()
        logger.add(sys.stderr, level="WARNING")


def print_summary(record: dict, out: Path, stream: Any = None) -> None:
    """The stage's printer: documents and bytes kept, and the biggest removals."""
    stream = stream or sys.stdout  # looked up now: a default bound at import would miss a redirect
    if record.get("submitted"):
        print(f"submitted; logs in {record['logs']}", file=stream)
        return
    o, i = record["output"], record["input"]
    print(f"kept {o['documents']}/{i['documents']} documents, {o['bytes'] / 1e6:.2f}/{i['bytes'] / 1e6:.2f} MB "
          f"in {record['seconds']:.1f} s -> {o['shards']} shard(s) in {Path(out) / SHARDS}", file=stream)  # fmt: skip
    for step in record["steps"]:
        if step["docs_in"] != step["docs_out"] or step["bytes_in"] != step["bytes_out"]:
            reasons = ", ".join(f"{k} {v}" for k, v in step["dropped"].items())
            print(f"  {step['step']:<12} -{step['docs_in'] - step['docs_out']} docs "
                  f"-{(step['bytes_in'] - step['bytes_out']) / 1e3:.1f} kB  {reasons}", file=stream)  # fmt: skip
