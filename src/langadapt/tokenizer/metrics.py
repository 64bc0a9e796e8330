"""Tokenizer fertility: how many tokens a tokenizer spends on a text.

``fertility(tokenizer, texts)`` is the one function other stages (eval, report) reuse. Counts are made
with batched ``encode_batch_fast`` of the raw ``tokenizers`` backend, without special tokens, so every
tokenizer is measured on the text alone. Words are whitespace words; ``tokens_per_char`` (non-space
characters) is the figure to read for scripts written without spaces (Japanese, Thai, Chinese).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.errors import reading
from langadapt.models import load_fast_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Above this many non-space characters per whitespace word, a text is (mostly) written without spaces.
UNSPACED_CHARS_PER_WORD = 12


def as_tokenizer(tokenizer: Any) -> Tokenizer:
    """A raw ``tokenizers.Tokenizer`` from a Tokenizer, a transformers tokenizer, a folder or an alias."""
    from tokenizers import Tokenizer


    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if hasattr(tokenizer, "backend_tokenizer"):  # transformers tokenizers backed by `tokenizers`
        return tokenizer.backend_tokenizer
    path = Path(tokenizer)
    with reading(path, "cannot load the tokenizer"):
        if path.is_file() and path.suffix == ".json":
            return Tokenizer.from_file(str(path))
        return load_fast_tokenizer(tokenizer)


def fertility(tokenizer: Any, texts: Iterable[str], *, batch_size: int = 256) -> dict[str, Any]:
    """Tokens per word / per character, bytes per token, and the byte-fallback and unknown shares."""
    return fertility_of_each([tokenizer], texts, batch_size=batch_size)[0]


def fertility_of_each(tokenizers: list[Any], texts: Iterable[str], *,
                      batch_size: int = 256) -> list[dict[str, Any]]:  # fmt: skip
    """:func:`fertility` of several tokenizers in one pass over ``texts`` (read and counted once)."""
    toks = [as_tokenizer(t) for t in tokenizers]
    specials = [_special_ids(tok) for tok in toks]
    text_counts = dict.fromkeys(("docs", "words", "chars", "bytes"), 0)
    token_counts = [dict.fromkeys(("tokens", "byte_fallback", "unknown"), 0) for _ in toks]
    it = iter(texts)
    while batch := list(itertools.islice(it, batch_size)):
        for text in batch:
            words = text.split()
            text_counts["docs"] += 1
            text_counts["words"] += len(words)
            text_counts["chars"] += sum(map(len, words))
            text_counts["bytes"] += len(text.encode("utf-8"))
        for tok, (byte_ids, unk_ids), n in zip(toks, specials, token_counts):
            for enc in tok.encode_batch_fast(batch, add_special_tokens=False):
                ids = enc.ids
                n["tokens"] += len(ids)
                if byte_ids:
                    n["byte_fallback"] += sum(1 for i in ids if i in byte_ids)
                if unk_ids:
                    n["unknown"] += sum(1 for i in ids if i in unk_ids)
    return [_ratios({**text_counts, **n}) for n in token_counts]


def _special_ids(tok) -> tuple[set[int], set[int]]:
    model = tok.model
    byte_fallback, unk = getattr(model, "byte_fallback", False), getattr(model, "unk_token", None)
    if not byte_fallback and unk is None:
        return set(), set()
    # look the 256 byte tokens up rather than scanning the vocabulary (get_vocab of 262k tokens: 0.3 s)
    byte_ids = {tok.token_to_id(f"<0x{b:02X}>") for b in range(256)} - {None} if byte_fallback else set()
    unk_id = tok.token_to_id(unk) if unk is not None else None
    return byte_ids, ({unk_id} if unk_id is not None else set())


def _ratios(n: dict[str, int]) -> dict[str, Any]:
    def div(a: int, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        **n,
        "tokens_per_word": div(n["tokens"], n["words"]),
        "tokens_per_char": div(n["tokens"], n["chars"]),
        "bytes_per_token": div(n["bytes"], n["tokens"]),
        "byte_fallback_share": div(n["byte_fallback"], n["tokens"]),
        "unknown_share": div(n["unknown"], n["tokens"]),
        "unspaced_script": n["words"] > 0 and n["chars"] / n["words"] > UNSPACED_CHARS_PER_WORD,
    }


def tokenizer_stats(
    tokenizer: Any, corpus_paths: list[str], text_field: str = "text", max_docs: int | None = None
) -> dict[str, Any]:
    """``langadapt tokenizer stats``: fertility of one tokenizer on corpus files."""
    paths = check_corpus(corpus_paths, text_field)
    stats = fertility(tokenizer, iter_documents(paths, text_field, max_docs))
    return {"tokenizer": str(tokenizer), "corpus": [str(p) for p in paths], **stats}


def print_stats(stats: dict[str, Any], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return
    print(f"tokenizer {stats['tokenizer']}: {stats['docs']} documents, {stats['tokens']} tokens")
    rows = [("tokens per word", "tokens_per_word"), ("tokens per character", "tokens_per_char"),
            ("bytes per token", "bytes_per_token"), ("byte-fallback share", "byte_fallback_share"),
            ("unknown share", "unknown_share")]  # fmt: skip
    for label, key in rows:
        print(f"  {label:<22}{stats[key]:>10.4f}")
    if stats["unspaced_script"]:
        print("  (text written mostly without spaces: read tokens per character, not per word)")
