"""The last stage of ``corpus prepare``: per-step figures from datatrove's stats, the stage record, the data
card, and the commit that makes the output appear whole (:func:`langadapt.runs.commit`, as for every stage).

It is a datatrove step itself, so on Slurm it runs as a job after the others, with no process waiting.
Also the output's layout (``shards/``, ``DATACARD.md``), which plan.py writes into and prepare.py reads.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from langadapt.config import PrepareConfig
from langadapt.corpus.minhash import minhash_record
from langadapt.runs import commit, stage_record, write_text_atomic

SHARDS = "shards"
"""The output's folder of shards (one per task that kept documents)."""
DATACARD = "DATACARD.md"
INPUTS_JSON = "inputs.json"
"""In the runner's work folder while a run is unfinished: the resolved input files it started with."""
METER = "📏 - METER: "


def load_stats(logs: Path) -> dict[str, dict]:
    """datatrove's per-task stats of one stage, summed: block name -> {"seconds": s, stat: total}.

    Read from datatrove's JSON (a stat is a number, or a dict with its "total") rather than through
    PipelineStats, whose loader keeps the bare numbers and then cannot add them up.
    """
    total: dict[str, dict] = {}
    for path in sorted((logs / "stats").glob("*.json")):
        for block in json.loads(path.read_text(encoding="utf-8")):
            acc = total.setdefault(block["name"], {"seconds": 0.0})
            acc["seconds"] += _total(block.get("time_stats", 0))
            for key, value in block.get("stats", {}).items():
                acc[key] = acc.get(key, 0) + _total(value)
    return total


def _own_seconds(stage: dict[str, dict], name: str) -> float:
    """A block's time without that of the blocks after it, where datatrove's timer also runs while the
    document travels downstream (ExactDedupFilter times its whole loop, yield included)."""
    seconds = stage.get(name, {}).get("seconds", 0.0)
    if "exact-deduplication stage 3" in name:
        names = list(stage)
        seconds -= sum(stage[n]["seconds"] for n in names[names.index(name) + 1 :])
    return max(seconds, 0.0)


def _total(value: float | dict) -> float:
    return value.get("total", 0) if isinstance(value, dict) else value


def step_figures(logs: Path, plan: list[tuple[str, dict]]) -> list[dict]:
    """Docs and bytes in/out of each logical step, its drop reasons, extra counts and time.

    ``logs``: datatrove's logging folders, one per stage; ``plan``: (stage, {step: [(stage, block)]}).
    """
    stats = {stage: load_stats(logs / stage) for stage, _ in plan}
    rows: list[dict] = []
    for stage, steps in plan:
        for label, blocks in steps.items():
            meter = stats[stage].get(METER + label, {})
            docs, size = int(meter.get("docs", 0)), int(meter.get("bytes", 0))
            row = {"step": label, "docs_in": rows[-1]["docs_out"] if rows else docs, "docs_out": docs,
                   "bytes_in": rows[-1]["bytes_out"] if rows else size, "bytes_out": size,
                   "dropped": {}, "seconds": 0.0}  # fmt: skip
            for block_stage, name in blocks:
                block = stats[block_stage].get(name, {})
                row["seconds"] += _own_seconds(stats[block_stage], name)
                for key, value in block.items():
                    if key.startswith("dropped_"):
                        row["dropped"][key.removeprefix("dropped_")] = int(value)
                    elif key in ("paragraphs_removed", "documents_changed"):
                        row[key] = row.get(key, 0) + int(value)
            row["seconds"] = round(row["seconds"], 3)
            row["dropped"] = dict(sorted(row["dropped"].items(), key=lambda kv: -kv[1]))
            rows.append(row)
    return rows


class Finalize(PipelineStep):
    """Writes DATACARD.md into the staged output and commits it to ``final`` (stage.json, DONE, rename).

    ``staged`` is the stage runner's work folder (the shards are written straight into it), ``scratch``
    datatrove's folder (logs with their stats, intermediate files). A rerun after the commit does nothing.
    """

    type = "🏁 - FINALIZE"
    name = "stage.json, data card, commit"

    def __init__(self, cfg: PrepareConfig, files: list[str], *, staged: Path, scratch: Path, final: Path,
                 plan: list, started: float):  # fmt: skip
        super().__init__()
        self.cfg, self.files, self.plan, self.started = cfg, files, plan, started
        self.staged, self.scratch, self.final = Path(staged), Path(scratch), Path(final)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if self.staged.exists():
            record = stage_record("prepare", self.cfg, time.time() - self.started, self.figures())
            write_text_atomic(self.staged / DATACARD, datacard(record))
            (self.staged / INPUTS_JSON).unlink(missing_ok=True)  # stage.json names the inputs
            shutil.rmtree(self.scratch / "tmp", ignore_errors=True)
            commit(self.staged, self.final, record)
        return
        yield  # a generator, like every datatrove step

    def figures(self) -> dict:
        """stage.json's figures: the steps, input and output sizes, the MinHash parameters."""
        shards_dir = self.staged / SHARDS
        shards_dir.mkdir(parents=True, exist_ok=True)  # nothing kept: still an (empty) folder
        steps = step_figures(self.scratch / "logs", self.plan)
        shards = sorted(p for p in shards_dir.iterdir() if p.is_file())
        return {
            "steps": steps,
            "input": {"files": self.files, "documents": steps[0]["docs_out"], "bytes": steps[0]["bytes_out"],
                      "bytes_on_disk": sum(_size(Path(f)) for f in self.files)},
            "output": {"documents": steps[-1]["docs_out"], "bytes": steps[-1]["bytes_out"], "shards": len(shards),
                       "bytes_on_disk": sum(p.stat().st_size for p in shards)},
            "minhash": minhash_record(self.cfg),
        }  # fmt: skip


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def datacard(record: dict) -> str:
    """A short Markdown data card: sources, sizes, what was removed and why, licences."""
    cfg, i, o = record["config"], record["input"], record["output"]
    lines = [
        f"# Data card: {cfg['lang']} corpus (langadapt corpus prepare)",
        "",
        f"Made by langadapt {record['langadapt_version']} in {record['seconds']:.1f} s.",
        "",
        "## Sources",
        "",
        *[f"- `{f}`" for f in i["files"]],
        "",
        f"Licences: {', '.join(cfg['licenses']) if cfg['licenses'] else 'not given (set `licenses` in the recipe)'}.",
        "",
        "## Sizes",
        "",
        "| | documents | MB (UTF-8 text) |",
        "|---|---:|---:|",
        f"| input | {i['documents']} | {i['bytes'] / 1e6:.2f} |",
        f"| output | {o['documents']} | {o['bytes'] / 1e6:.2f} |",
        "",
        f"Output: {o['shards']} shard(s) in `shards/` ({cfg['output_format']}, {o['bytes_on_disk'] / 1e6:.2f} MB on disk).",
        "",
        "## What was removed, and why",
        "",
        "| step | docs in | docs out | MB in | MB out | reasons (documents) |",
        "|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for s in record["steps"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items())
        if s.get("paragraphs_removed"):
            reasons = f"{reasons}; " if reasons else ""
            reasons += (
                f"{s['paragraphs_removed']} paragraphs cut from {s.get('documents_changed', 0)} documents"
            )
        lines.append(f"| {s['step']} | {s['docs_in']} | {s['docs_out']} | {s['bytes_in'] / 1e6:.2f} | "
                     f"{s['bytes_out'] / 1e6:.2f} | {reasons} |")  # fmt: skip
    mh = record.get("minhash")
    settings = (f"Script ratio >= {cfg['min_script_ratio']}; language id {'on' if cfg['language_id'] else 'off'} "
                f"(py3langid, score >= {cfg['min_language_score']}); at least {cfg['min_words']} words; "
                f"boilerplate: a paragraph in >= {cfg['boilerplate_min_doc_share']:.0%} of documents "
                f"or >= {cfg['boilerplate_min_docs']} documents.")  # fmt: skip
    lines += ["", "## Settings", "", settings]
    if mh:
        lines.append(f"MinHash-LSH: {mh['ngrams']}-gram shingles, {mh['bands']} bands x {mh['rows']} rows; "
                     f"probability a pair is found, by Jaccard: {mh['detection_probability']}.")  # fmt: skip
    return "\n".join(lines) + "\n"
