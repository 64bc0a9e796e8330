"""What the real-cluster tests of corpus prepare share (tests/test_prepare_ray.py, the Slurm test in
tests/test_prepare_executors.py): a slice of the shared Hungarian text with planted duplicates across
files, the config, and the comparison with the local executor's output."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

from langadapt.config import PrepareConfig
from langadapt.runs import run_stage
from langadapt.stages import BY_NAME

SHARED_HU = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "hu" / "train.jsonl.gz"
FILES = 4
PER_FILE = 40


def hu_slice(folder: Path) -> list[str]:
    """160 help pages of the shared Hungarian train split in 4 files, with an exact copy and a one-word
    edit of pages of files 0 and 1 planted in file 3, so that the dedup stages remove documents across
    tasks (what a cluster run could get wrong: each task reads other tasks' signatures)."""
    with gzip.open(SHARED_HU, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in itertools.islice(fh, FILES * PER_FILE)]
    long = [r for r in rows if len(r["text"].split()) >= 150]
    exact, near = long[0], long[1]
    words = near["text"].split(" ")
    words[len(words) // 2] = "megváltoztatott"
    planted = [{"id": f"copy-of-{exact['id']}", "text": exact["text"]},
               {"id": f"edit-of-{near['id']}", "text": " ".join(words)}]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(FILES):
        part = rows[i::FILES] + (planted if i == FILES - 1 else [])
        path = folder / f"hu-{i}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        paths.append(str(path))
    return paths


def config(inputs: list[str], **kw) -> PrepareConfig:
    """Every step on (the default pipeline), 2 tasks; 2 MinHash bands instead of 13: each band is a task,
    and a task costs 2-4 s of process start on a cluster executor whatever it does."""
    return PrepareConfig(input=inputs, lang="hu", tasks=2, workers=2, minhash_buckets=2, minhash_rows=4, **kw)


def prepare(cfg: PrepareConfig, out: Path) -> dict:
    return run_stage(BY_NAME["prepare"], cfg, out)


def shards(out: Path) -> dict[str, list[dict]]:
    """Shard name -> its records in order (decompressed: gzip's header holds a time stamp)."""
    return {p.name: [json.loads(line) for line in gzip.open(p, "rt", encoding="utf-8")]
            for p in sorted((out / "shards").glob("*.jsonl.gz"))}  # fmt: skip


def figures(out: Path) -> dict:
    """stage.json's order-independent figures: per-step documents, bytes and drop reasons (sums over
    tasks), input and output sizes, the MinHash parameters; not the times nor the executor's settings."""
    record = json.loads((out / "stage.json").read_text(encoding="utf-8"))
    return {
        "steps": [{k: v for k, v in step.items() if k != "seconds"} for step in record["steps"]],
        "input": record["input"],
        "output": {k: record["output"][k] for k in ("documents", "bytes", "shards")},
        "minhash": record["minhash"],
    }


def assert_same_output(reference: Path, other: Path) -> None:
    """The same shards with the same documents in the same order, and the same figures.

    Shard by shard, not as a set: with the same ``tasks`` every executor gives task r the same input files
    (r, r + tasks, ...), each task's steps are deterministic, and the dedup stages decide from hashes
    sorted on disk, so a cluster that ran every task exactly once writes the local run's shards.
    """
    a, b = shards(reference), shards(other)
    assert list(a) == list(b)
    for name in a:
        assert a[name] == b[name], name
    assert figures(reference) == figures(other)
    ids = {r["id"] for rows in a.values() for r in rows}
    planted = [i for i in ids if i.startswith(("copy-of-", "edit-of-"))]
    assert not [i for i in planted if i.split("-of-", 1)[1] in ids]  # the planted duplicates were removed
