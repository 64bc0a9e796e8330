"""The run report's plots (matplotlib, Agg): one message each, axes labelled with their units.

Every figure is 7 x 3.8 inches at 200 dpi and shown 700 px wide in report.md, so 10-point text reads as
body text does. The values plotted are the ones the report's tables print, from the same records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIGSIZE = (7, 3.8)
DPI = 200
WIDTH_PX = 700
"""Width at which report.md shows every plot."""
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9.5, "ytick.labelsize": 9.5, "axes.spines.top": False,
         "axes.spines.right": False}  # fmt: skip


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    plt = _plt()
    with plt.rc_context(STYLE):
        return plt.subplots(1, ncols, figsize=FIGSIZE)


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def grouped_bars(ax: Any, groups: Sequence[str], series: dict[str, Sequence[float]], *, fmt: str,
                 errors: dict[str, Sequence[tuple[float, float]]] | None = None,
                 marks: dict[str, Sequence[bool]] | None = None) -> None:  # fmt: skip
    """One cluster of bars per group, one bar per series, each labelled with its value (``fmt``; a ``*``
    after it where ``marks`` says so)."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        yerr = None
        if errors and name in errors:
            yerr = [[v - lo for v, (lo, _) in zip(values, errors[name])],
                    [hi - v for v, (_, hi) in zip(values, errors[name])]]  # fmt: skip
        ax.bar(xs, values, width * 0.92, label=name, yerr=yerr, capsize=3 if yerr else 0,
               error_kw={"elinewidth": 1, "ecolor": "0.25"})  # fmt: skip
        tops = [hi for _, hi in errors[name]] if yerr else values  # the value goes above its interval
        starred = (marks or {}).get(name) or [False] * len(values)
        for x, top, v, star in zip(xs, tops, values, starred):
            ax.annotate(fmt.format(v) + ("*" if star else ""), (x, top), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8.5)  # fmt: skip
    ax.set_xticks(range(len(groups)), groups)
    ax.margins(y=0.12)


def fertility(texts: list[str], before: list[float], after: list[float], path: Path) -> Path:
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        grouped_bars(ax, texts, {"base tokenizer": before, "extended tokenizer": after}, fmt="{:.2f}")
        ax.set_ylabel("tokens per word (lower is better)")
        ax.set_title("Tokens per word before and after the tokenizer extension")
        ax.legend(frameon=False)
    return _save(fig, path)


def sweep(sizes: list[int], curves: dict[str, list[float]], base: dict[str, float], suggested: int,
          path: Path) -> Path:  # fmt: skip
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        for (name, values), marker in zip(curves.items(), "os^"):
            line = ax.plot(sizes, values, marker + "-", label=name)[0]
            if name in base:
                ax.axhline(base[name], color=line.get_color(), linestyle="--", linewidth=0.9,
                           label=f"{name}, base tokenizer")  # fmt: skip
        ax.axvline(suggested, color="0.4", linestyle=":", label=f"suggested size: {suggested:,}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("new tokens added to the vocabulary (log scale)")
        ax.set_ylabel("tokens per word (held-out text)")
        ax.set_title("Fertility against the number of new tokens")
        ax.legend(frameon=False, fontsize=8.5)
    return _save(fig, path)


def bpb(labels: list[str], series: dict[str, list[float]], path: Path) -> Path:
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        grouped_bars(ax, labels, series, fmt="{:.3f}")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.set_xlabel("model")
        ax.set_title("Held-out bits per byte of each model")
        ax.legend(frameon=False)
    return _save(fig, path)


def curve(xs: list[float], series: dict[str, list[float]], *, ylabel: str, title: str, path: Path) -> Path:
    """Lines against tokens seen (training loss, evaluation bits per byte)."""
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        for name, values in series.items():
            ax.plot(xs, values, "o-" if len(xs) <= 20 else "-", markersize=3.5, label=name)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M, 2G
        if len(series) > 1:
            ax.legend(frameon=False)
    return _save(fig, path)


def distill(losses: dict[str, list[float]], ylabels: dict[str, str], titles: dict[str, str], path: Path) -> Path:
    stages = [s for s in losses if losses[s]]
    fig, axes = _figure(len(stages))
    axes = list(axes) if len(stages) > 1 else [axes]
    with _plt().rc_context(STYLE):
        for ax, stage in zip(axes, stages):
            steps = list(range(1, len(losses[stage]) + 1))
            ax.plot(steps, losses[stage], "o-", markersize=3)
            ax.set_xlabel("optimizer step")
            ax.xaxis.get_major_locator().set_params(integer=True)  # steps are whole numbers
            ax.set_ylabel(ylabels[stage])
            ax.set_title(titles[stage])
    return _save(fig, path)


def scores(groups: list[str], series: dict[str, list[float]], errors: dict[str, list[tuple[float, float]]], *,
           ylabel: str, title: str, path: Path, chance: float | None = None, fmt: str = "{:.2f}",
           marks: dict[str, list[bool]] | None = None) -> Path:  # fmt: skip
    """Bars with 95% intervals (translation and multiple-choice scores), one bar per model."""
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        grouped_bars(ax, groups, series, fmt=fmt, errors=errors, marks=marks)
        if chance is not None:
            ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        # below the axes: the intervals and their labels may reach any corner
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(series) + 1)
    return _save(fig, path)
