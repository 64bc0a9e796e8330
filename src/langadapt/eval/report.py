"""``langadapt report RUN_DIR``: report.md and plots/*.png from a run's own records, nothing re-computed.

It reads whatever the run has (a run may lack any stage): recipe.yaml, every stage folder's stage.json,
the tokenizer's extension.json, sweep.json, eval bpb's metrics.json, pretrain's metrics.jsonl, distill's
losses, eval translate's and eval choice's results.json (and the translations' samples.jsonl), eval
samples', eval speed's and eval chat's results.json, and export gguf's verify.json. Each table names the
file it comes from and prints that file's numbers, rounded as every number of its kind is
(:mod:`langadapt.eval.report_md`). The report is the ``report`` stage: it writes into the runner's work
folder, which is committed to RUN_DIR/report/, and since it derives from the other stages' records it is
rebuilt (not skipped) on every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langadapt.config import ReportConfig
from langadapt.errors import UserError
from langadapt.eval import report_md as md
from langadapt.eval import report_plots as plots
from langadapt.eval import report_sections as sections
from langadapt.eval.common import METRICS_JSON, RESULTS_JSON, SAMPLES_JSONL
from langadapt.eval.speed import RUNTIMES
from langadapt.export.gguf import VERIFY_JSON
from langadapt.runs import EXTENSION_JSON, METRICS_JSONL, STAGE_JSON, write_text_atomic
from langadapt.stages import BY_NAME
from langadapt.tokenizer.sweep import SWEEP_JSON

REPORT_MD = "report.md"
CORPORA = ("target", "english")


class Run:
    """A run folder's records, each read once and only when it exists."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, Any] = {}

    def get(self, rel: str) -> Any:
        """The parsed file ``rel`` (JSON, JSON lines, or text), None when the run has no such file."""
        if rel not in self._cache:
            path = self.folder / rel
            self._cache[rel] = _read(path) if path.is_file() else None
        return self._cache[rel]

    def stage_records(self) -> list[tuple[str, dict[str, Any]]]:
        """(folder, stage.json) of every stage folder but the report's own, in the stage list's order."""
        order = {name: i for i, name in enumerate(BY_NAME)}
        found = [(d.name, self.get(f"{d.name}/{STAGE_JSON}")) for d in sorted(self.folder.iterdir())
                 if d.is_dir() and not d.name.startswith(".") and (d / STAGE_JSON).is_file()]  # fmt: skip
        found = [(name, r) for name, r in found if isinstance(r, dict) and r.get("stage") != "report"]
        return sorted(found, key=lambda item: order.get(item[1].get("stage"), len(order)))


def _read(path: Path) -> Any:
    raw = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(raw)
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc})", path) from exc
    return raw


def folder(stage: str) -> str:
    """The run folder of ``stage`` (declared once, in :mod:`langadapt.stages`)."""
    return BY_NAME[stage].folder


def files() -> dict[str, str]:
    """Every record the report reads, relative to the run folder."""
    return {
        "recipe": "recipe.yaml",
        "extension": f"{folder('extend')}/{EXTENSION_JSON}",
        "sweep": f"{folder('sweep')}/{SWEEP_JSON}",
        "bpb": f"{folder('eval')}/{METRICS_JSON}",
        "pretrain": f"{folder('pretrain')}/{STAGE_JSON}",
        "pretrain_log": f"{folder('pretrain')}/{METRICS_JSONL}",
        "distill": f"{folder('distill')}/{STAGE_JSON}",
        "translate": f"{folder('translate')}/{RESULTS_JSON}",
        "translate_samples": f"{folder('translate')}/{SAMPLES_JSONL}",
        "choice": f"{folder('choice')}/{RESULTS_JSON}",
        "samples": f"{folder('samples')}/{RESULTS_JSON}",
        "chat": f"{folder('chat')}/{RESULTS_JSON}",
        "chat_samples": f"{folder('chat')}/{SAMPLES_JSONL}",
        "speed": f"{folder('speed')}/{RESULTS_JSON}",
        "export": f"{folder('export')}/{STAGE_JSON}",
        "export_verify": f"{folder('export')}/{VERIFY_JSON}",
    }


def is_run(run_dir: Path) -> bool:
    """A run folder holds its recipe.yaml or at least one stage folder."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and ((run_dir / "recipe.yaml").is_file() or any(run_dir.glob(f"*/{STAGE_JSON}")))


# ------------------------------------------------------------------------------------------ headline


@dataclass
class Headline:
    metric: str
    kind: str
    """How the values are rounded (:data:`langadapt.eval.report_md.DECIMALS`)."""
    base: float | None
    adapted: float | None
    p: float | None
    models: str
    source: str


def headline(run: Run) -> list[Headline]:
    """Base (first model) against adapted (last model) of every results file the run has."""
    f, rows = files(), []
    bpb = run.get(f["bpb"])
    if bpb and bpb.get("models"):
        first, last = bpb["models"][0], bpb["models"][-1]
        pair = f"{first['label']} → {last['label']}"
        for key, name, kind in (("bpb", "bits/byte", "bpb"), ("tokens_per_word", "tokens/word", "tokens_per_word")):
            for corpus, title in md.CORPUS_NAMES.items():
                if corpus in first:
                    rows.append(Headline(f"{title} {name}", kind, first[corpus][key], last[corpus][key], None,
                                         pair, f["bpb"]))  # fmt: skip
    elif run.get(f["extension"]):
        fert = run.get(f["extension"]).get("fertility", {})
        for corpus, title in md.CORPUS_NAMES.items():
            key = f"{corpus}_heldout" if f"{corpus}_heldout" in fert else corpus  # held-out text first
            if key in fert:
                rows.append(Headline(f"{title} tokens/word", "tokens_per_word", fert[key]["before"]["tokens_per_word"],
                                     fert[key]["after"]["tokens_per_word"], None, "base → extended tokenizer",
                                     f["extension"]))  # fmt: skip
    tr = run.get(f["translate"])
    if tr and tr.get("models"):
        key = f"{tr['src']}-{tr['tgt']}"
        first, last = tr["models"][0], tr["models"][-1]
        if key in first["directions"] and key in last["directions"]:
            p = last["directions"][key].get("chrf++_p_vs_first") if len(tr["models"]) > 1 else None
            rows.append(Headline(f"{tr['src']}→{tr['tgt']} chrF++", "score", first["directions"][key]["chrf++"],
                                 last["directions"][key]["chrf++"], p, f"{first['label']} → {last['label']}",
                                 f["translate"]))  # fmt: skip
    mc = run.get(f["choice"])
    if mc and mc.get("models"):
        first, last = mc["models"][0], mc["models"][-1]
        p = last.get("acc_p_vs_first") if len(mc["models"]) > 1 else None
        rows.append(Headline("multiple-choice acc", "acc", first["acc"], last["acc"], p,
                             f"{first['label']} → {last['label']}", f["choice"]))  # fmt: skip
    rows += speed_headline(run.get(f["speed"]), f["speed"])
    return rows


def speed_headline(results: dict[str, Any] | None, src: str) -> list[Headline]:
    """Words per second of the first and the last model, per runtime and language ``eval speed`` measured."""
    models = (results or {}).get("models") or []
    if len(models) < 2:
        return []
    first, last, rows = models[0], models[-1], []
    for runtime, name in RUNTIMES.items():
        for corpus, title in md.CORPUS_NAMES.items():
            a = (first.get("runtimes") or {}).get(runtime, {}).get(corpus)
            b = (last.get("runtimes") or {}).get(runtime, {}).get(corpus)
            if a and b:
                rows.append(Headline(f"{title} words/s, {name}", "words_per_s", a.get("words_per_s"),
                                     b.get("words_per_s"), None, f"{first['label']} → {last['label']}", src))  # fmt: skip
    return rows


def headline_lines(rows: list[Headline], alpha: float) -> list[str]:
    header = ["metric", "base", "adapted", "change", "p vs base", f"significant (p < {alpha:g})", "models",
              "from"]  # fmt: skip
    cells = [[r.metric, md.num(r.base, r.kind), md.num(r.adapted, r.kind), md.change(r.base, r.adapted, r.kind),
              md.p_value(r.p), sections.significant(r.p, alpha), r.models, f"`{r.source}`"] for r in rows]  # fmt: skip
    about = ("*base: the first model of each results file; adapted: its last. change: adapted − base (and "
             "relative). Bits per byte and tokens per word: lower is better; chrF++ (0-100), accuracy (0-1) and "
             "words generated per second: higher is better. p: the results file's paired test against the first "
             "model.*")  # fmt: skip
    return [*md.table(header, cells, "lrrrrlll"), "", about]


# --------------------------------------------------------------------------------------------- build


def build_report(cfg: ReportConfig, work: Path) -> dict[str, Any]:
    """Stage entry (``report``): report.md and plots/*.png of the run ``cfg.run_dir``, into ``work``."""
    run_dir = Path(cfg.run_dir)
    if not cfg.run_dir or not is_run(run_dir):
        raise UserError("not a langadapt run folder (no recipe.yaml and no stage folder with a stage.json)",
                        run_dir)  # fmt: skip
    run, plot_dir = Run(run_dir), Path(work) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: list[str] = []

    def plot(name: str, draw: Callable[[Path], Any], alt: str) -> str:
        draw(path=plot_dir / name)
        made.append(name)
        return md.image(name, alt, plots.WIDTH_PX)

    rows = headline(run)
    about = (f"Run folder `{run_dir}`. Every number below is the number in the results file named under its "
             "table, rounded; nothing is re-computed.")  # fmt: skip
    lines = [f"# langadapt report: {run_dir.resolve().name}", "", about, ""]
    titles = []
    if rows:
        lines += ["## Headline", "", *headline_lines(rows, cfg.significance), ""]
        titles.append("Headline")
    for title, body in sections.all_sections(run, files(), cfg, plot):
        lines += [f"## {title}", "", *body, ""]
        titles.append(title)
    write_text_atomic(Path(work) / REPORT_MD, "\n".join(lines).rstrip("\n") + "\n")
    return {"report": REPORT_MD, "sections": titles, "plots": made, "headline": [asdict(r) for r in rows]}


# ------------------------------------------------------------------------------------------ terminal


def print_headline(run_dir: Path) -> None:
    """The headline table of a run on the terminal, and where its report is."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    run_dir = Path(run_dir)
    console = Console()
    rows = headline(Run(run_dir)) if run_dir.is_dir() else []
    if not rows:
        console.print(f"{escape(str(run_dir))}: nothing evaluated yet")
    else:
        pairs = sorted({r.models for r in rows})
        table = Table(title=escape(f"{run_dir}: base vs adapted"), caption=escape("; ".join(pairs)))
        for column in ("metric", "base", "adapted", "change", "p vs base"):
            table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
        for r in rows:
            table.add_row(escape(r.metric), md.num(r.base, r.kind), md.num(r.adapted, r.kind),
                          md.change(r.base, r.adapted, r.kind), md.p_value(r.p))  # fmt: skip
        console.print(table)
    report = run_dir / folder("report") / REPORT_MD
    if report.exists():
        console.print(f"report: {escape(str(report))}", soft_wrap=True, highlight=False)


def print_report(record: dict[str, Any], out: Path) -> None:
    """What ``langadapt report`` prints: the headline table and the report's path."""
    print_headline(Path(out).parent)


def metric_rows(metrics: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """(model labels, [(metric name, value per model)]) of an ``eval bpb`` metrics.json."""
    labels = [m["label"] for m in metrics["models"]]
    rows = []
    for corpus, title in md.CORPUS_NAMES.items():
        if corpus not in metrics["models"][0]:
            continue
        for key, name in (("tokens_per_word", "tokens/word"), ("bpb", "bits/byte")):
            rows.append((f"{title} {name}", [m[corpus][key] for m in metrics["models"]]))
    return labels, rows


def print_eval(record: dict[str, Any], out: Path) -> None:
    """What ``eval bpb`` prints: the models side by side (from ``out/metrics.json``)."""
    from rich.console import Console
    from rich.table import Table

    metrics = json.loads((Path(out) / METRICS_JSON).read_text(encoding="utf-8"))
    labels, rows = metric_rows(metrics)
    console = Console()
    table = Table(title=f"{out}: bits per byte and tokens per word (lower is better)")
    for column in ("text", "metric", *labels, "change"):
        table.add_column(column, justify="left" if column in ("text", "metric") else "right")
    for name, values in rows:
        text, metric = name.split(" ", 1)
        kind = "bpb" if metric == "bits/byte" else "tokens_per_word"
        change = f"{(values[-1] - values[0]) / values[0] * 100:+.1f}%" if len(values) > 1 and values[0] else ""
        table.add_row(text, metric, *[md.num(v, kind) for v in values], change)
    console.print(table)
    first = metrics["models"][0]
    corpus = next(first[c] for c in CORPORA if c in first)
    console.print(f"documents start after {corpus['doc_start']!r} ({corpus['doc_start_rule']}); windows of "
                  f"{corpus['max_len']} tokens, stride {corpus['stride']}; bf16={corpus['bf16']}")  # fmt: skip
