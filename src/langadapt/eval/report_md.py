"""Markdown pieces of the run report: tables, escaped text, and the one way each kind of number is rounded.

Every number the report prints goes through :data:`DECIMALS`, so a value reads the same in every table
and can be found again, rounded the same way, in the results file the table names.
"""

from __future__ import annotations

import html
import re
from typing import Any

CORPUS_NAMES = {"target": "target", "english": "English"}
"""The held-out corpora of a run, in the order every table shows them, and the word a table prints."""
DECIMALS = {"bpb": 3, "tokens_per_word": 3, "bytes_per_token": 3, "score": 2, "acc": 3, "rate": 3,
            "loss": 3, "seconds": 1, "per_s": 0, "words_per_s": 1, "ratio": 2, "percent": 3}  # fmt: skip
"""Decimals per kind of number: bits per byte, fertility, chrF/BLEU (0-100), accuracy and rates (0-1),
losses, seconds, training throughput, generation speed (a few to a few hundred words per second), speed
ratios, percentages of small differences."""

_INLINE = re.compile(r"([\\`*_\[\]|~$])")


def num(value: Any, kind: str) -> str:
    """``value`` rounded as every number of its kind is; "—" when the record has none."""
    if value is None:
        return "—"
    return f"{value:.{DECIMALS[kind]}f}"


def count(value: Any) -> str:
    """An integer with thousands separators."""
    return "—" if value is None else f"{value:,}"


def with_ci(value: float, ci: list[float] | None, kind: str) -> str:
    """``value [low, high]`` (the record's 95% interval)."""
    if not ci:
        return num(value, kind)
    return f"{num(value, kind)} [{num(ci[0], kind)}, {num(ci[1], kind)}]"


def p_value(p: float | None) -> str:
    """Three decimals; below 0.001, "< 0.001" (a paired bootstrap of 1,000 resamples bottoms out there)."""
    if p is None:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def change(base: float | None, new: float | None, kind: str) -> str:
    """``new - base`` rounded as the values are, and the relative change."""
    if base is None or new is None:
        return "—"
    diff = f"{new - base:+.{DECIMALS[kind]}f}"
    return f"{diff} ({(new - base) / base * 100:+.1f}%)" if base else diff


def text(value: Any, limit: int) -> str:
    """Model output or corpus text as one inline markdown span: cut at ``limit`` characters (marked …),
    HTML and markdown punctuation escaped, newlines as ``<br>`` (safe inside a table cell)."""
    s = str(value)
    if len(s) > limit:
        s = s[:limit] + "…"
    s = html.escape(s, quote=False)
    s = _INLINE.sub(r"\\\1", s)
    return s.replace("\r\n", "\n").replace("\n", "<br>")


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A markdown table; ``align`` has one letter per column, l or r (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def source(*files: str, note: str = "") -> str:
    """The line under a table that names the records it comes from."""
    listed = ", ".join(f"`{f}`" for f in files)
    return f"*From {listed}.{' ' + note if note else ''}*"


def fenced(body: str, lang: str = "") -> list[str]:
    """``body`` in a code fence longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, body.rstrip("\n"), fence]


def image(name: str, alt: str, width: int) -> str:
    return f'<img src="plots/{name}" width="{width}" alt="{html.escape(alt)}">'
