"""Greedy BPE merge learning that starts from existing token sequences (continued BPE training).

The words arrive already tokenized by the base tokenizer, so every learned merge joins two tokens the
base actually produces next to each other. Pair counts are kept incrementally: merging ``(a, b)`` only
touches the words that contain it (an index from pair to words), and in those words only the pairs next
to each merged occurrence change. A max-heap with lazy invalidation picks the most frequent pair; ties
go to the smaller (left id, right id), so the result is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass

Pair = tuple[int, int]


@dataclass(frozen=True)
class LearnedMerge:
    left: int
    right: int
    result: int
    text: str
    """The merged token's vocabulary string."""
    new: bool
    """False when the merged string already was a base token (the merge adds no token)."""
    count: int
    """Occurrences of the pair when it was merged."""


def merge_word(word: list[int], a: int, b: int, n: int) -> tuple[list[int], list[Pair], list[Pair]] | None:
    """Merge every (a, b) in ``word`` left to right, like the BPE model does at encode time.

    Returns the new word, the pairs that disappeared and the pairs that appeared (with repeats), or
    None when the pair does not occur.
    """
    starts, j, size = [], 0, len(word)
    while True:
        try:
            j = word.index(a, j)
        except ValueError:
            break
        if j + 1 < size and word[j + 1] == b:
            starts.append(j)
            j += 2
        else:
            j += 1
    if not starts:
        return None
    gone_at = sorted({k for s in starts for k in (s - 1, s, s + 1) if 0 <= k < size - 1})
    new: list[int] = []
    at, prev = [], 0
    for s in starts:
        new.extend(word[prev:s])
        at.append(len(new))
        new.append(n)
        prev = s + 2
    new.extend(word[prev:])
    came_at = sorted({k for m in at for k in (m - 1, m) if 0 <= k < len(new) - 1})
    return new, [(word[k], word[k + 1]) for k in gone_at], [(new[k], new[k + 1]) for k in came_at]


def learn_merges(
    words: list[list[int]],
    freqs: list[int],
    strings: dict[int, str],
    *,
    next_id: int,
    num_new_tokens: int,
    min_frequency: int = 2,
    barrier_ids: set[int] = frozenset(),
    forbidden_pairs: set[Pair] = frozenset(),
    reserved_strings: set[str] = frozenset(),
) -> list[LearnedMerge]:
    """Learn merges on ``words`` (token-id lists, modified in place) until ``num_new_tokens`` exist.

    ``strings`` maps every id in the words to its vocabulary string; merged strings that already exist
    reuse their id. Pairs touching ``barrier_ids`` and ``forbidden_pairs`` are never counted; a pair whose
    merged string is in ``reserved_strings`` is dropped when it comes up. Stops early when no pair
    occurs ``min_frequency`` times.
    """
    by_string = {s: i for i, s in strings.items()}
    strings = dict(strings)
    forbidden = set(forbidden_pairs)

    def allowed(p: Pair) -> bool:
        return p[0] not in barrier_ids and p[1] not in barrier_ids and p not in forbidden

    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for p in itertools.pairwise(w):
            if allowed(p):
                counts[p] += f
                where[p].add(i)
    heap = [(-c, a, b) for (a, b), c in counts.items() if c >= min_frequency]
    heapq.heapify(heap)

    learned: list[LearnedMerge] = []
    added = 0
    while heap and added < num_new_tokens:
        neg, a, b = heapq.heappop(heap)
        count = counts.get((a, b), 0)
        if count != -neg:  # stale entry: counts of old pairs only go down
            if count >= min_frequency:
                heapq.heappush(heap, (-count, a, b))
            continue
        text = strings[a] + strings[b]
        if text in reserved_strings:
            forbidden.add((a, b))
            del counts[(a, b)]
            continue
        n = by_string.get(text)
        if n is None:
            n = next_id + added
            added += 1
            strings[n] = by_string[text] = text
        learned.append(LearnedMerge(a, b, n, text, n >= next_id, count))
        for p in _apply(words, freqs, where.pop((a, b)), a, b, n, counts, where, allowed):
            if counts[p] >= min_frequency:
                heapq.heappush(heap, (-counts[p], *p))
        counts.pop((a, b), None)
    return learned


def _apply(words, freqs, indices, a, b, n, counts, where, allowed) -> set[Pair]:
    """Merge (a, b) -> n in the given words; update pair counts; return the pairs that gained."""
    gained: set[Pair] = set()
    for i in indices:
        merged = merge_word(words[i], a, b, n)
        if merged is None:  # stale index entry
            continue
        words[i], gone, came = merged
        f = freqs[i]
        for p in gone:
            if p in counts:
                counts[p] -= f
        for p in came:
            if allowed(p):
                counts[p] += f
                where[p].add(i)
                gained.add(p)
    return gained
