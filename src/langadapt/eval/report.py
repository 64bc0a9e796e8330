"""The final evaluation of a run and its report: one table, tokenizer-independent, plus plots.

``evaluate_run`` scores every model of the run (base, initialised, distilled, pretrained) on the same
held-out target and English documents with :func:`langadapt.eval.bpb.bpb_of_model` — bits per byte and
tokens per word — and writes ``eval/metrics.json``. ``write_report`` turns the run folder into
``report.md`` and ``plots/*.png``; ``print_summary`` prints the before/after table on the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langadapt.config import EvalConfig
from langadapt.runs import Timer, atomic_output_dir, mark_done, write_stage_json, write_text_atomic
from langadapt.train.monitor import read_metrics

CORPORA = ("target", "english")


def model_label(path: str) -> str:
    """Short names for the models of a run: the stage folder (``pretrain/final`` -> ``pretrain``)."""
    p = Path(path)
    if p.name == "final":
        return p.parent.name
    return {"model": "init"}.get(p.name, p.name) if p.exists() else str(path)


def evaluate_run(cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """Score every model in ``cfg.models`` on ``cfg.target`` and ``cfg.english``; write metrics.json."""
    from langadapt.eval.bpb import bf16_is_faster, bpb_by_corpus, read_heldout
    from langadapt.models import load_model, load_tokenizer, resolve_model

    texts = read_heldout(dict(zip(CORPORA, (cfg.target, cfg.english))), cfg.max_docs)
    paths = [resolve_model(m) for m in cfg.models]
    bf16 = bf16_is_faster()
    results = []
    with Timer() as timer, atomic_output_dir(out, overwrite=True) as tmp:
        for name, path in zip(cfg.models, paths):
            model, tokenizer = load_model(path), load_tokenizer(path)
            scores = bpb_by_corpus(model, tokenizer, texts, batch_size=cfg.batch_size, max_len=cfg.max_len,
                                   stride=cfg.stride, bf16=bf16)  # fmt: skip
            label = "base" if not results else model_label(name)  # the runner lists the base model first
            results.append({"label": label, "model": str(name), **scores})
            del model
        metrics = {"models": results, "docs": {k: len(v) for k, v in texts.items()}}
        write_text_atomic(tmp / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
        write_stage_json(tmp, "eval", cfg, timer.elapsed(), models=[r["label"] for r in results])
        mark_done(tmp)
    write_report(out.parent)
    return metrics


def load_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "eval" / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows(run_dir: Path) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(model labels, [(metric name, value per model)]) from the eval, else from the tokenizer stage.

    Metric names read "<text> <metric>", e.g. "target bits/byte".
    """
    metrics = load_metrics(run_dir)
    if metrics:
        labels = [m["label"] for m in metrics["models"]]
        rows = []
        for corpus, title in (("target", "target"), ("english", "English")):
            if corpus not in metrics["models"][0]:
                continue
            for key, name in (("tokens_per_word", "tokens/word"), ("bpb", "bits/byte")):
                rows.append((f"{title} {name}", [m[corpus][key] for m in metrics["models"]]))
        return labels, rows
    ext_path = Path(run_dir) / "tokenizer" / "extension.json"
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
    from rich.console import Console
    from rich.table import Table

    labels, rows = summary_rows(run_dir)
    console = Console()
    if not rows:
        console.print(f"nothing evaluated yet in {run_dir}")
        return
    table = Table(title=f"{run_dir}: base vs adapted (lower is better)")
    table.add_column("text")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("change", justify="right")
    for name, values in rows:
        text, metric = name.split(" ", 1)
        table.add_row(text, metric, *[f"{v:.3f}" for v in values], _change(values))
    console.print(table)
    if (Path(run_dir) / "report.md").exists():
        console.print(f"report: {Path(run_dir) / 'report.md'}")


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
    log = Path(run_dir) / "pretrain" / "metrics.jsonl"
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
