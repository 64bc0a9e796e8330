"""corpus prepare on a cluster: the Slurm and Ray executors are built and chained correctly (no cluster
here: sbatch is faked and Ray is only constructed), and the recipe runner plans the stage."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

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


def test_recipe_runner_plans_prepare_first(tmp_path: Path) -> None:
    from langadapt.pipeline import plan

    recipe = C.Recipe(name="t", target_lang="ru", runs_dir=str(tmp_path),
                      data=C.DataConfig(target_train=["/data/ru/*.jsonl.gz"]), prepare=PrepareConfig(),
                      extend=C.ExtendConfig())  # fmt: skip
    stages = plan(recipe)
    assert stages[0].name == "prepare" and stages[0].config.lang == "ru"
    assert stages[0].config.input == ["/data/ru/*.jsonl.gz"]
    assert stages[1].config.corpus == output_files(tmp_path / "t" / "corpus")
