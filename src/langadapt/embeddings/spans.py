"""Distillation data: target-language spans read by both tokenizers, and where their positions align.

A document is cut into spans of ``seq_len`` teacher tokens; each span is tokenized by the teacher (the
base tokenizer) and the student (the extended one). Position k of one sequence and position j of the
other are *aligned* when both tokens end at the same character of the span, so both models have read
exactly the same text there and should hold the same next-token state. Only aligned positions at or
after the student's first new token are kept: before it both sequences are the same ids through the same
weights, so their distance is zero and would only dilute the loss. Spans without new tokens are dropped.
Every sequence starts with the document-start token of ``langadapt.tokenizer.document`` (same as evaluation).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    teacher_ids: list[int]
    student_ids: list[int]
    teacher_pos: list[int]
    """Aligned positions in teacher_ids (index into the sequence, start token included)."""
    student_pos: list[int]


def _last_index_by_end(offsets: list[tuple[int, int]]) -> dict[int, int]:
    # several byte-level tokens can share one character's end; the last of them completes it
    return {end: i for i, (_, end) in enumerate(offsets)}


def make_span(text: str, teacher, student, start_id: int, n_base: int, seq_len: int) -> Span | None:
    """``teacher``/``student`` are raw ``tokenizers.Tokenizer`` objects (offsets, no special tokens)."""
    t = teacher.encode(text, add_special_tokens=False)
    s = student.encode(text, add_special_tokens=False)
    t_ids, s_ids = t.ids[:seq_len], s.ids[:seq_len]
    first_new = next((i for i, x in enumerate(s_ids) if x >= n_base), None)
    if first_new is None:
        return None
    t_end = _last_index_by_end(t.offsets[: len(t_ids)])
    s_end = _last_index_by_end(s.offsets[: len(s_ids)])
    pairs = sorted((t_end[e], j) for e, j in s_end.items() if e in t_end and j >= first_new)
    if not pairs:
        return None
    # +1: position 0 of each sequence is the document-start token
    return Span([start_id, *t_ids], [start_id, *s_ids], [p + 1 for p, _ in pairs], [q + 1 for _, q in pairs])


def cut_document(text: str, teacher, seq_len: int) -> list[str]:
    """Consecutive pieces of ``text`` of ``seq_len`` teacher tokens each (cut at token starts)."""
    offsets = teacher.encode(text, add_special_tokens=False).offsets
    cuts = [offsets[i][0] for i in range(0, len(offsets), seq_len)] + [len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts) if text[a:b].strip()]


def build_spans(docs: Iterable[str], teacher, student, *, start_id: int, n_base: int, seq_len: int,
                count: int) -> list[Span]:  # fmt: skip
    """The first ``count`` usable spans of ``docs`` (fewer if the corpus runs out)."""
    spans: list[Span] = []
    for doc in docs:
        for piece in cut_document(doc, teacher, seq_len):
            span = make_span(piece, teacher, student, start_id, n_base, seq_len)
            if span is not None:
                spans.append(span)
                if len(spans) >= count:
                    return spans
    return spans
