"""corpus prepare on a cluster: the Slurm and Ray executors are built and chained correctly (sbatch faked,
Ray only constructed), the recipe runner plans the stage, and, where a Slurm cluster answers (CI starts a
one-node one: .ci/slurm-up), a real Slurm run writes what the local executor writes. The real Ray
cluster's tests are in tests/test_prepare_ray.py."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

import cluster_runs as cr
import pytest
import tiny

from langadapt import config as C
from langadapt.config import PrepareConfig
from langadapt.corpus.plan import build_stages, make_executors
from langadapt.corpus.prepare import output_files, print_summary, scratch_dir
from langadapt.errors import UserError
from langadapt.runs import STARTED_JSON, run_stage, work_folder
from langadapt.stages import BY_NAME

STAGES = [
    "filter",
    "boilerplate",
    "clean",
    "exact_find",
    "exact",
    "mh_buckets",
    "mh_cluster",
    "minhash",
    "finalize",
]


def test_slurm_submits_every_stage_after_the_one_before(tmp_path: Path, monkeypatch, capsys) -> None:
    from datatrove.executor import slurm

    submitted: list[tuple[str, tuple]] = []

    def fake_sbatch(script: str, job_id_retriever, *args) -> str:
        submitted.append((script, args))
        return str(100 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", fake_sbatch)
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", tiny.demo_texts("hu", n=10))
    out = tmp_path / "out"
    cfg = PrepareConfig(input=[str(corpus)], lang="hu", executor="slurm", slurm_partition="cpu", tasks=4)

    record = run_stage(BY_NAME["prepare"], cfg, out)

    assert record["submitted"] is True and not out.exists()
    assert (work_folder(out) / STARTED_JSON).exists()  # the finalize job commits it to out
    jobs = [(s, a) for s, a in submitted if "launch_pickled_pipeline" in s]
    assert [s.split("--job-name=")[1].split()[0] for s, _ in jobs] == [
        f"langadapt-prepare-{n}" for n in STAGES
    ]
    assert "--array=0-3" in jobs[0][0] and "--array=0-12" in jobs[5][0]  # 4 tasks; 13 MinHash bands
    # each stage waits for the one before it (afterok on its job id)
    job_ids = [str(101 + i) for i, (s, _) in enumerate(submitted) if "launch_pickled_pipeline" in s]
    for (_, args), prev in zip(jobs[1:], job_ids[:-1]):
        assert any(a.startswith("--dependency=") and f"afterok:{prev}" in a for a in args), args
    assert (scratch_dir(out) / "logs" / "finalize" / "executor.pik").exists()
    capsys.readouterr()
    print_summary(record, out)
    assert capsys.readouterr().out == f"submitted; logs in {scratch_dir(out) / 'logs'}\n"


def plan_stages(cfg: PrepareConfig) -> list:
    return build_stages(cfg, ["/data/x.jsonl"], staged=Path("/runs/.o.partial"), scratch=Path("/runs/.o.datatrove"),
                        final=Path("/runs/o"), started=time.time())  # fmt: skip


def test_ray_executors_are_chained() -> None:
    cfg = PrepareConfig(input=["x"], lang="hu", executor="ray", tasks=3, cpus_per_task=2)
    stages = plan_stages(cfg)
    executors = make_executors(cfg, stages, Path("/runs/.o.datatrove"))
    assert [s.name for s in stages] == STAGES
    assert all(type(e).__name__ == "RayPipelineExecutor" for e in executors)
    assert all(b.depends is a for a, b in itertools.pairwise(executors))
    assert executors[0].tasks == 3 and executors[5].tasks == 13 and executors[0].cpus_per_task == 2


def test_a_failed_ray_stage_stops_the_run_instead_of_waiting(tmp_path: Path) -> None:
    """datatrove's Ray executor only logs a failed task, and the next stage would poll for it forever."""
    from langadapt.corpus.plan import run_executors

    class Stage:
        def __init__(self, name: str, missing: list[int]) -> None:
            self.missing, self.ran = missing, False
            self.logging_dir = type("Dir", (), {"path": str(tmp_path / "logs" / name)})()

        def run(self) -> None:
            self.ran = True

        def get_incomplete_ranks(self) -> list[int]:
            return self.missing

    stages = [Stage("filter", []), Stage("boilerplate", [1]), Stage("clean", [])]
    with pytest.raises(RuntimeError, match="1 task\\(s\\) of 'boilerplate' failed on the Ray cluster"):
        run_executors(PrepareConfig(executor="ray"), stages)
    assert [s.ran for s in stages] == [True, True, False]


def test_stage_list_follows_the_switches() -> None:
    cfg = PrepareConfig(input=["x"], lang="ja", boilerplate_filter=False, exact_dedup=False)
    stages = plan_stages(cfg)
    assert [s.name for s in stages] == ["filter", "mh_buckets", "mh_cluster", "minhash", "finalize"]
    # the MinHash step's time includes the signatures computed at the end of the filter stage
    assert [stage for stage, _ in stages[-2].steps["minhash_dedup"]] == ["minhash", "filter", "mh_buckets",
                                                                         "mh_cluster"]  # fmt: skip


def test_config_rejects_bad_values() -> None:
    with pytest.raises(UserError, match="slurm_partition"):
        PrepareConfig(executor="slurm")
    with pytest.raises(UserError, match="output_format"):
        PrepareConfig(output_format="csv")
    with pytest.raises(UserError, match="minhash_buckets"):
        PrepareConfig(minhash_buckets=10)
    with pytest.raises(UserError, match="cpus_per_task"):
        PrepareConfig(executor="ray", cpus_per_task=0)


def test_recipe_runner_plans_prepare_first(tmp_path: Path) -> None:
    from langadapt.pipeline import plan

    recipe = C.Recipe(name="t", target_lang="ru", runs_dir=str(tmp_path),
                      data=C.DataConfig(target_train=["/data/ru/*.jsonl.gz"]), prepare=PrepareConfig(),
                      extend=C.ExtendConfig())  # fmt: skip
    stages = plan(recipe)
    assert stages[0].name == "prepare" and stages[0].config.lang == "ru"
    assert stages[0].config.input == ["/data/ru/*.jsonl.gz"]
    assert stages[1].config.corpus == output_files(tmp_path / "t" / "corpus")


def slurm_partition() -> str | None:
    """The partition to test on where a Slurm controller answers here: $LANGADAPT_SLURM_PARTITION, else the
    default one that is up (None: no sbatch, or nothing answers)."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return None
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    up = [line.split()[0] for line in info.stdout.splitlines() if info.returncode == 0 and line.endswith(" up")]
    if not up:
        return None
    return os.environ.get("LANGADAPT_SLURM_PARTITION") or next((p for p in up if p.endswith("*")), up[0]).rstrip("*")


SLURM = slurm_partition()


def _our_jobs(folder: Path) -> list[str]:
    """Ids of the queued or running jobs submitted from ``folder`` (their working directory)."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=10, check=True)
    return [line.split()[0] for line in queue.stdout.splitlines() if line.split()[1:] == [str(folder)]]


@pytest.mark.skipif(SLURM is None, reason="no Slurm cluster answers here (sinfo/sbatch); CI starts one: .ci/slurm-up")
def test_slurm_cluster_writes_what_the_local_executor_writes(tmp_path: Path, monkeypatch) -> None:
    """The jobs run on the cluster's nodes, so tmp_path must be on storage they share (pytest --basetemp
    on a multi-node cluster). Submitted from tmp_path: that is how the jobs are found and, on failure,
    cancelled (only these)."""
    inputs = cr.hu_slice(tmp_path / "in")
    cr.prepare(cr.config(inputs), tmp_path / "local")
    out = tmp_path / "slurm"
    monkeypatch.chdir(tmp_path)
    cfg = cr.config(inputs, executor="slurm", slurm_partition=SLURM, slurm_time="0:15:00")
    record = cr.prepare(cfg, out)
    assert record["submitted"] is True
    try:
        deadline = time.monotonic() + 300
        while _our_jobs(tmp_path) and time.monotonic() < deadline:
            time.sleep(1)
        logs = scratch_dir(out) / "logs"
        assert (out / "DONE").exists(), f"the Slurm jobs did not finish in 300 s; logs in {logs}"
    finally:
        if jobs := _our_jobs(tmp_path):
            subprocess.run(["scancel", *jobs], check=False)
    cr.assert_same_output(tmp_path / "local", out)
    assert not work_folder(out).exists()  # committed by the finalize job; the logs stay for reading
    assert (scratch_dir(out) / "logs" / "finalize" / "completions" / "00000").exists()
