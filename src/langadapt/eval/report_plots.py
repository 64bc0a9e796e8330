"""The run report's plots (matplotlib, Agg): one message each, axes labelled with their units.

Every figure is 7 x 3.8 inches at 200 dpi and shown 700 px wide in report.md, so 10-point text reads as
body text does. The values plotted are the ones the report's tables print, from the same records.
"""

from __future__ import annotations

import math
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


def smoothing_span(n: int) -> int:
    """The EMA span for a curve of ``n`` points: about a quarter of it (8 at the demo's 30 steps), so a short
    run is still smoothed and a long one is not smoothed into a straight line; at least 2 (under 4
    points: 1, nothing to smooth)."""
    return 1 if n < 4 else max(2, round(n / 4))


def smooth(values: Sequence[float], span: int) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing, debiased as Adam's moments
    are): ``m_t = b·m_(t-1) + (1-b)·x_t``, shown as ``m_t / (1 - b^t)`` with ``b = 1 - 2/(span+1)``.

    Causal: a point depends only on the steps up to it, so a spike or a divergence shows where it
    happened, never before; the correction keeps the first points on the data instead of pulled toward
    the zero the average starts from. A non-finite value (a diverged step) is shown as NaN and left out
    of the average. ``span`` 1: the values themselves."""
    beta = 1 - 2 / (span + 1)
    out, m, weight = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        m = beta * m + (1 - beta) * v
        weight = beta * weight + (1 - beta)  # = 1 - beta^t over the finite values so far
        out.append(m / weight)
    return out


def training_loss(xs: list[float], losses: list[float], evals: dict[str, tuple[list[float], list[float]]],
                  path: Path) -> Path:  # fmt: skip
    """Per-step training loss as faint points, its smoothed line (:func:`smooth`) over them, and the
    held-out bits per byte measured during training on a second axis (other units), against tokens seen."""
    from matplotlib.ticker import EngFormatter

    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        span = smoothing_span(len(losses))
        raw = ax.plot(xs, losses, "o" if len(xs) <= 200 else "-", markersize=3, linewidth=0.8, alpha=0.35,
                      color="C0", label="training loss, per step")[0]  # fmt: skip
        handles = [raw]
        if span > 1:
            handles += ax.plot(xs, smooth(losses, span), "-", linewidth=2, color="C0",
                               label=f"smoothed (EMA over ~{span} steps)")  # fmt: skip
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("training loss (nats per token)")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M, 2G
        shown = {name: xy for name, xy in evals.items() if xy[0]}
        if shown:
            right = ax.twinx()
            right.spines["right"].set_visible(True)
            for (name, (ex, ey)), color in zip(shown.items(), ("C3", "C2", "C4", "C1")):
                handles += right.plot(ex, ey, "s--", markersize=5, linewidth=1, color=color,
                                      label=f"{name} bits/byte (held-out)")  # fmt: skip
            right.set_ylabel("held-out bits per byte")
        ax.set_title("Training loss" + (" and held-out bits per byte" if shown else "") + " during pretraining")
        # below the axes: the points may fill every corner
        ax.legend(handles=handles, labels=[h.get_label() for h in handles], frameon=False, fontsize=8.5,
                  loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # fmt: skip
    return _save(fig, path)


def speed(groups: list[str], series: dict[str, list[float]], path: Path) -> Path:
    """Words generated per second, one cluster per runtime and language, one bar per model."""
    fig, ax = _figure()
    with _plt().rc_context(STYLE):
        grouped_bars(ax, groups, series, fmt="{:.1f}")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("words generated per second (higher is better)")
        ax.set_title("Generation speed, batch size 1")
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
