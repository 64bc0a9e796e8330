"""``eval make-choice``: a "pick the right translation" multiple-choice task built from parallel text.

Each item shows a source sentence (:data:`QUESTION_TEMPLATE`); its choices are the true translation and
``n_choices - 1`` distractors: other pairs' translations of similar length (drawn by the seeded RNG from
the :data:`NEAREST` closest in characters, never equal to the answer). Answer positions cycle through
every position and are then shuffled by the seed, so they are balanced within one. The task file is the
``--task`` of ``eval choice`` (:mod:`langadapt.eval.choice`).
"""

from __future__ import annotations

import bisect
import json
import random
from pathlib import Path
from typing import Any

from langadapt.config import MakeChoiceConfig
from langadapt.corpus.readers import read_pairs
from langadapt.errors import UserError
from langadapt.eval.common import TASK_JSONL
from langadapt.runs import write_text_atomic

QUESTION_TEMPLATE = "{src}: {src_text}\n{tgt}:"
"""The question of an item (``src`` / ``tgt`` are the language codes)."""
NEAREST = 20
"""Distractors are drawn from the targets of this many other pairs closest in character length."""


def nearest_by_length(pool: list[str], lengths: list[int], target: str, k: int) -> list[str]:
    """Up to ``k`` texts of ``pool`` (sorted by length; ``lengths`` theirs) closest to ``target`` in
    characters, never ``target`` itself (compared without surrounding whitespace)."""
    want, key = len(target), target.strip()
    right = bisect.bisect_left(lengths, want)
    left = right - 1
    out: list[str] = []
    while len(out) < k and (left >= 0 or right < len(pool)):
        take_left = right >= len(pool) or (left >= 0 and want - lengths[left] <= lengths[right] - want)
        index = left if take_left else right
        if take_left:
            left -= 1
        else:
            right += 1
        if pool[index].strip() != key:
            out.append(pool[index])
    return out


def make_choice(cfg: MakeChoiceConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval make-choice``): write ``out/task.jsonl``, a pick-the-translation task."""
    if not cfg.pairs:
        raise UserError("eval make-choice needs a parallel file (--pairs)")
    if not cfg.src or not cfg.tgt:
        raise UserError("make-choice needs --src and --tgt (the parallel file's language fields)")
    pairs = read_pairs(cfg.pairs, cfg.src, cfg.tgt, cfg.split)
    where = f" of split {cfg.split!r}" if cfg.split else ""
    if len(pairs) < cfg.n_choices:
        raise UserError(f"only {len(pairs)} pairs{where}, fewer than n_choices ({cfg.n_choices})", cfg.pairs)
    unique = {p[cfg.tgt].strip(): p[cfg.tgt] for p in pairs}
    if len(unique) < cfg.n_choices:
        raise UserError(f"only {len(unique)} different {cfg.tgt!r} sentences{where}, fewer than n_choices "
                        f"({cfg.n_choices})", cfg.pairs)  # fmt: skip
    pool = sorted(unique.values(), key=lambda t: (len(t), t))
    lengths = [len(t) for t in pool]
    rng = random.Random(cfg.seed)
    chosen = list(range(len(pairs)))
    if cfg.max_items is not None and cfg.max_items < len(pairs):
        chosen = sorted(rng.sample(chosen, cfg.max_items))
    positions = [i % cfg.n_choices for i in range(len(chosen))]
    rng.shuffle(positions)
    lines = []
    for index, answer in zip(chosen, positions):
        pair = pairs[index]
        truth = pair[cfg.tgt]
        distractors = rng.sample(nearest_by_length(pool, lengths, truth, NEAREST), cfg.n_choices - 1)
        choices = [*distractors[:answer], truth, *distractors[answer:]]
        item = {"question": QUESTION_TEMPLATE.format(src=cfg.src, src_text=pair[cfg.src], tgt=cfg.tgt),
                "choices": choices, "answer": answer}  # fmt: skip
        item.update({k: pair[k] for k in ("id", "source") if k in pair})
        lines.append(json.dumps(item, ensure_ascii=False) + "\n")
    write_text_atomic(out / TASK_JSONL, "".join(lines))
    counts = [positions.count(p) for p in range(cfg.n_choices)]
    return {"items": len(lines), "pairs": len(pairs), "answer_positions": counts,
            "question_template": QUESTION_TEMPLATE, "distractors": f"{NEAREST} nearest in characters",
            "task": TASK_JSONL}  # fmt: skip


def print_make_choice(record: dict[str, Any], out: Path) -> None:
    """What ``eval make-choice`` prints: one line."""
    print(f"{Path(out) / TASK_JSONL}: {record['items']} items from {record['pairs']} pairs, answers at "
          f"positions {record['answer_positions']}")  # fmt: skip
