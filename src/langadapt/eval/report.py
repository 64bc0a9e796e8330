"""A run's report: one tokenizer-independent table, each stage's timings, plus plots.

Everything comes from the run's own records (``eval/metrics.json`` from ``eval bpb``, extension.json,
stage.json files, pretrain's metrics.jsonl); nothing is re-computed. ``write_report`` turns the run
folder into ``report.md`` and ``plots/*.png``; ``print_summary`` prints the before/after table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langadapt.eval.bpb import METRICS_JSON
from langadapt.runs import EXTENSION_JSON, write_text_atomic
from langadapt.stages import BY_NAME
from langadapt.train.monitor import METRICS_JSONL, read_metrics

CORPORA = ("target", "english")


def load_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / BY_NAME["eval"].folder / METRICS_JSON
    return json.loads(path.read_text()) if path.exists() else None


def metric_rows(metrics: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(model labels, [(metric name, value per model)]) of an ``eval bpb`` metrics.json."""
    labels = [m["label"] for m in metrics["models"]]
    rows = []
    for corpus, title in (("target", "target"), ("english", "English")):
        if corpus not in metrics["models"][0]:
            continue
        for key, name in (("tokens_per_word", "tokens/word"), ("bpb", "bits/byte")):
            rows.append((f"{title} {name}", [m[corpus][key] for m in metrics["models"]]))
    return labels, rows


def summary_rows(run_dir: Path) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(model labels, [(metric name, value per model)]) from the eval, else from the tokenizer stage.

    Metric names read "<text> <metric>", e.g. "target bits/byte".
    """
    metrics = load_metrics(run_dir)
    if metrics:
        return metric_rows(metrics)
    ext_path = Path(run_dir) / BY_NAME["extend"].folder / EXTENSION_JSON
    if ext_path.exists():
        fert = json.loads(ext_path.read_text())["fertility"]
        rows = []
        for corpus, title in (("target", "target"), ("english", "English")):
            key = f"{corpus}_heldout" if f"{corpus}_heldout" in fert else corpus  # held-out text first
            if key in fert:
                before, after = fert[key]["before"], fert[key]["after"]
                rows.append((f"{title} tokens/word", [before["tokens_per_word"], after["tokens_per_word"]]))
        return ["base", "extended"], rows
    return [], []


def _change(values: list[float]) -> str:
    if len(values) < 2 or not values[0]:
        return ""
    return f"{(values[-1] - values[0]) / values[0] * 100:+.1f}%"


def print_summary(run_dir: Path) -> None:
    """The before/after table of a run on the terminal."""
    labels, rows = summary_rows(run_dir)
    console = _print_table(f"{run_dir}: base vs adapted (lower is better)", labels, rows)
    if rows and (Path(run_dir) / "report.md").exists():
        console.print(f"report: {Path(run_dir) / 'report.md'}")


def print_eval(record: dict[str, Any], out: Path) -> None:
    """What ``eval bpb`` prints: the models side by side (from ``out/metrics.json``)."""
    metrics = json.loads((Path(out) / METRICS_JSON).read_text(encoding="utf-8"))
    labels, rows = metric_rows(metrics)
    console = _print_table(f"{out}: bits per byte and tokens per word (lower is better)", labels, rows)
    first = metrics["models"][0]
    corpus = next(first[c] for c in CORPORA if c in first)
    console.print(f"documents start after {corpus['doc_start']!r} ({corpus['doc_start_rule']}); windows of "
                  f"{corpus['max_len']} tokens, stride {corpus['stride']}; bf16={corpus['bf16']}")  # fmt: skip


def _print_table(title: str, labels: list[str], rows: list[tuple[str, list[float]]]) -> Any:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"nothing evaluated yet: {title}")
        return console
    table = Table(title=title)
    table.add_column("text")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("change", justify="right")
    for name, values in rows:
        text, metric = name.split(" ", 1)
        table.add_row(text, metric, *[f"{v:.3f}" for v in values], _change(values))
    console.print(table)
    return console


def write_report(run_dir: Path) -> Path:
    """``report.md`` with the summary table, each stage's key figures, and the plots."""
    run_dir = Path(run_dir)
    labels, rows = summary_rows(run_dir)
    lines = [f"# langadapt report: {run_dir.name}", ""]
    if rows:
        lines += ["| metric | " + " | ".join(labels) + " | change |", "|---" * (len(labels) + 2) + "|"]
        lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {_change(vals)} |" for n, vals in rows]
        about = ("Bits per byte: summed negative log-likelihood / ln 2 / UTF-8 bytes, on held-out text; "
                 "comparable across tokenizers. Lower is better.")
        lines += ["", about, ""]
    lines += _stage_lines(run_dir)
    for plot in make_plots(run_dir):
        lines += [f"![{plot.stem}](plots/{plot.name})", ""]
    out = run_dir / "report.md"
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out


def _stage_lines(run_dir: Path) -> list[str]:
    lines = ["## Stages", "", "| stage | seconds | langadapt |", "|---|---:|---|"]
    for stage_json in sorted(run_dir.glob("*/stage.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(stage_json.read_text())
        lines.append(f"| {stage_json.parent.name} | {record.get('seconds', '')} | "
                     f"{record.get('langadapt_version', '')} |")  # fmt: skip
    return lines + [""]


def make_plots(run_dir: Path) -> list[Path]:
    """bpb per model and corpus, and the pretraining loss curve when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(run_dir) / "plots"
    plots_dir.mkdir(exist_ok=True)
    made = []
    metrics = load_metrics(run_dir)
    if metrics:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        labels = [m["label"] for m in metrics["models"]]
        for ax, (key, title) in zip(axes, (("bpb", "bits per byte"), ("tokens_per_word", "tokens per word"))):
            for i, corpus in enumerate(c for c in CORPORA if c in metrics["models"][0]):
                values = [m[corpus][key] for m in metrics["models"]]
                ax.bar([x + i * 0.4 for x in range(len(labels))], values, width=0.4, label=corpus)
            ax.set_xticks([x + 0.2 for x in range(len(labels))], labels, rotation=20)
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        made.append(_save(fig, plots_dir / "metrics.png"))
    log = Path(run_dir) / BY_NAME["pretrain"].folder / METRICS_JSONL
    if log.exists():
        records = read_metrics(log)
        steps = [r for r in records if "loss" in r and "step" in r]
        if steps:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot([r["step"] for r in steps], [r["loss"] for r in steps])
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("training loss (nats/token)")
            ax.set_title("continual pretraining")
            made.append(_save(fig, plots_dir / "pretrain_loss.png"))
    return made


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
