"""What a translator must not change, kept out of its reach: the masking of ``data translate``.

A message is split into **pieces**: what is kept verbatim and the **segments** that are translated.

* Fenced code blocks (```` ``` ```` or ``~~~`` lines and everything between them) are kept and never sent.
* Every other line is one segment (few-shot and MT translators translate a line at a time; the newline
  ends a causal translator's output anyway). Its markdown structure stays out of it: leading whitespace,
  heading marks, list bullets and numbers, check boxes and quote marks are kept, and a table row is
  split into its cells. Lines with no letters (table rules, numbers, blank lines) are kept.
* Inside a segment, protected spans (:data:`PROTECTED`: inline code, URLs, e-mail addresses, ``{name}``,
  ``{{name}}``, ``%s`` / ``%(name)s`` / ``%1$d``, ``$VAR`` / ``${VAR}``, HTML tags, and the sentinel
  brackets themselves) become numbered sentinels, ``⟦1⟧``, ``⟦2⟧`` ... (:class:`Sentinel`).

After translation :func:`restore` puts the spans back, and only when every sentinel of the segment came
back exactly once and no other appeared; otherwise the segment is broken (the item is dropped, reason
"broken placeholders").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import regex

PROTECTED = regex.compile(
    r"``[^\n]+?``|`[^`\n]+`"  # inline code
    r"|(?:https?|ftp)://[^\s<>()\[\]{}\"'`]+(?<![.,;:!?])"  # URLs (trailing punctuation is the sentence's)
    r"|www\.[^\s<>()\[\]{}\"'`]+(?<![.,;:!?])"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
    r"|\{\{[^{}\n]*\}\}|\{[\w.:!<>^=+\-#\[\]]*\}"  # {{name}}, {name}, {0}, {}, {x:>10}
    r"|(?<![\w%])%(?:\(\w+\)|\d+\$)?[-#0+]*\d*(?:\.\d+)?[sdifuxXoeEgGcr](?!\w)"  # printf: %s %(name)s %1$d
    r"|\$\{[^}\n]+\}|\$[A-Za-z_]\w*"  # $VAR, ${VAR}
    r"|</?[A-Za-z][^<>\n]*>"  # HTML tags, <URL>-style placeholders
)
"""Spans kept out of translation (the sentinel brackets are added per :class:`Sentinel`)."""

FENCE = regex.compile(r"^\s*(```|~~~)")
LINE_PREFIX = regex.compile(r"^\s*(?:(?:#{1,6}|[-*+]|\d{1,3}[.)]|>)[ \t]+(?:\[[ xX]\][ \t]+)?)*")
"""Leading whitespace and markdown marks of a line: headings, bullets, numbers, check boxes, quotes."""
LETTER = regex.compile(r"\p{L}")


@dataclass(frozen=True)
class Sentinel:
    """The numbered marker a protected span becomes (``⟦1⟧``); the brackets are protected spans too."""

    open: str = "⟦"
    close: str = "⟧"

    def make(self, number: int) -> str:
        return f"{self.open}{number}{self.close}"

    def pattern(self) -> regex.Pattern:
        return regex.compile(regex.escape(self.open) + r"(\d+)" + regex.escape(self.close))

    def brackets(self) -> regex.Pattern:
        return regex.compile(regex.escape(self.open) + "|" + regex.escape(self.close))


SENTINELS = (Sentinel("⟦", "⟧"), Sentinel("[[", "]]"))
"""Tried in order: the first one the translator's tokenizer round-trips is used (MT vocabularies often
lack ``⟦``)."""


@dataclass(frozen=True)
class Segment:
    text: str
    """The masked text sent to the translator."""
    spans: tuple[str, ...]
    """The protected spans, sentinel 1, 2, ... in order."""


@dataclass(frozen=True)
class Masked:
    """A message as pieces: ``str`` (kept verbatim) or :class:`Segment` (translated)."""

    pieces: tuple[str | Segment, ...]

    @property
    def segments(self) -> list[Segment]:
        return [p for p in self.pieces if isinstance(p, Segment)]


def mask_spans(text: str, sentinel: Sentinel = SENTINELS[0]) -> Segment:
    """``text`` with every protected span replaced by the next sentinel."""
    spans: list[str] = []

    def replace(match: regex.Match) -> str:
        spans.append(match.group(0))
        return sentinel.make(len(spans))

    both = regex.compile(PROTECTED.pattern + "|" + sentinel.brackets().pattern)
    return Segment(both.sub(replace, text), tuple(spans))


def mask(text: str, sentinel: Sentinel = SENTINELS[0]) -> Masked:
    """Split ``text`` into kept pieces and masked segments (see the module doc)."""
    pieces: list[str | Segment] = []
    in_code = False
    for i, line in enumerate(text.split("\n")):
        if i:
            pieces.append("\n")
        if FENCE.match(line):
            in_code = not in_code
            pieces.append(line)
        elif in_code:
            pieces.append(line)
        else:
            pieces.extend(_mask_line(line, sentinel))
    return Masked(tuple(_merge(pieces)))


def _mask_line(line: str, sentinel: Sentinel) -> list[str | Segment]:
    prefix = LINE_PREFIX.match(line).group(0)
    body = line[len(prefix) :]
    if body.strip().startswith("|"):  # a table row: its cells one by one
        out: list[str | Segment] = [prefix]
        for j, cell in enumerate(body.split("|")):
            if j:
                out.append("|")
            out.extend(_mask_text(cell, sentinel))
        return out
    return [prefix, *_mask_text(body, sentinel)]


def _mask_text(text: str, sentinel: Sentinel) -> list[str | Segment]:
    """Surrounding whitespace kept; the rest is a segment when letters remain outside protected spans."""
    core = text.strip()
    if not core:
        return [text]
    segment = mask_spans(core, sentinel)
    if not LETTER.search(sentinel.pattern().sub("", segment.text)):
        return [text]
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return [lead, segment, trail]


def _merge(pieces: list[str | Segment]) -> list[str | Segment]:
    out: list[str | Segment] = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


def restore(segment: Segment, translated: str, sentinel: Sentinel = SENTINELS[0]) -> str | None:
    """The translation with its spans put back; None when a sentinel is lost, repeated or made up."""
    pattern = sentinel.pattern()
    found = Counter(int(n) for n in pattern.findall(translated))
    if found != Counter(range(1, len(segment.spans) + 1)):
        return None
    if sentinel.brackets().search(pattern.sub("", translated)):  # a stray bracket: a sentinel half kept
        return None
    return pattern.sub(lambda m: segment.spans[int(m.group(1)) - 1], translated)


def unmask(masked: Masked, translations: list[str], sentinel: Sentinel = SENTINELS[0]) -> str | None:
    """The message with each segment replaced by its (restored) translation, in order; None when any
    segment's sentinels did not all come back."""
    it = iter(translations)
    out = []
    for piece in masked.pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        restored = restore(piece, next(it).strip(), sentinel)
        if restored is None:
            return None
        out.append(restored)
    return "".join(out)


def plain(text: str, sentinel: Sentinel = SENTINELS[0]) -> str:
    """A segment's text without its sentinels, for the script, language and length checks."""
    return " ".join(sentinel.pattern().sub(" ", text).split())


def choose_sentinel(round_trips) -> Sentinel:
    """The first of :data:`SENTINELS` for which ``round_trips(text) -> bool`` holds (the last otherwise)."""
    for sentinel in SENTINELS:
        if round_trips(f"a {sentinel.make(1)} b {sentinel.make(12)}"):
            return sentinel
    return SENTINELS[-1]
