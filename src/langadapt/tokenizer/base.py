"""What the extension needs to know about a base tokenizer, read from its ``tokenizer.json``.

Two BPE styles are supported: byte-level (GPT-2, Llama-3, Qwen, SmolLM2) and SentencePiece-style with
Metaspace and byte fallback (Llama-2, Mistral). Anything else (WordPiece, Unigram, BPE with a
continuing-subword prefix, ...) is a :class:`UserError`, because appending merges to it would not mean
what the user expects.

"Units" are the strings BPE merges never cross: the base's own pre-tokens, or, for a Metaspace tokenizer
run with ``split=False`` (the whole text is one pre-token: Llama-2, Gemma), the words between ``▁``
boundaries. Counting units, not documents, keeps merge learning cheap. A few base tokens may span such a
boundary (Gemma's ``>▁</``): a boundary inside an occurrence of one of them in the text is not split
there, which keeps the split exact (a merge can only cross a boundary by building such a token, and a
token can only be built where its string occurs). A base with many of them (a ``tokenizers`` BPE
trained with ``split=False``, unlike SentencePiece's own models) keeps whole pre-tokens as units: still
exact, but then memory grows with the corpus rather than with its vocabulary.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError, reading
from langadapt.models import resolve_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Above this many cross-word tokens (or 1% of the vocabulary), units are whole pre-tokens.
MAX_CROSS_WORD = 256
BYTE_TOKEN = re.compile(r"^<0x[0-9A-F]{2}>$")
# Files of a tokenizer folder that describe special tokens and chat formatting: copied unchanged.
COPIED_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                "chat_template.json", "added_tokens.json")  # fmt: skip
# Files that encode the old vocabulary in another format; they would disagree with the extension.
STALE_FILES = ("tokenizer.model", "vocab.json", "merges.txt")


@dataclass
class BaseTokenizer:
    folder: Path
    data: dict[str, Any]
    """The parsed tokenizer.json."""
    style: str
    """'byte-level' or 'metaspace'."""
    replacement: str | None
    """The Metaspace character (None for byte-level)."""
    split_words: bool
    """Split pre-tokens at word starts (Metaspace with whole-text pre-tokens, few cross-word tokens)."""
    vocab: dict[str, int]
    strings: dict[int, str]
    first_new_id: int
    """One past the highest id in use, added/special tokens included."""
    barrier_ids: set[int] = field(default_factory=set)
    """Byte-fallback and unknown tokens: never part of a new merge."""
    reserved_strings: set[str] = field(default_factory=set)
    """Strings a new token must not take (special tokens, ``<0xNN>`` byte tokens)."""
    merge_pairs: set[tuple[int, int]] = field(default_factory=set)
    """The base's merges as id pairs (never learned again)."""
    cross_word_tokens: list[str] = field(default_factory=list)
    """Tokens holding a word boundary after their start (``a▁b``): where one occurs, words are not split."""
    added_outside_vocab: dict[str, int] = field(default_factory=dict)
    """Added tokens whose ids lie outside the model vocabulary (Llama-3's specials), by content."""
    _tokenizer: Any = field(default=None, repr=False)
    """The parsed ``tokenizers.Tokenizer``."""

    @property
    def ignore_merges(self) -> bool:
        return bool(self.data["model"].get("ignore_merges"))

    def tokenizer(self) -> Tokenizer:
        """The base as a ``tokenizers.Tokenizer`` (parsed once; treat it as read-only)."""
        return self._tokenizer


def merge_pairs(model: dict) -> list[list[str]]:
    """A BPE model's merges as [left, right] pairs, whichever form tokenizer.json stores them in.

    The [left, right] form (tokenizers >= 0.20) also holds strings with spaces; mixed forms are not."""
    return [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]


def load_base(name_or_path: str | Path) -> BaseTokenizer:
    """Read and check a base tokenizer (model alias, model folder or tokenizer folder)."""
    folder = resolve_tokenizer(name_or_path)
    path = folder / "tokenizer.json"
    from tokenizers import Tokenizer

    with reading(path, "cannot load tokenizer.json"):
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        tokenizer = Tokenizer.from_str(text)
    model = data.get("model") or {}
    kind = model.get("type")
    if kind != "BPE":
        raise UserError(f"unsupported tokenizer model {kind or 'unknown'!r}: only BPE (byte-level or "
                        "SentencePiece-style with byte fallback) can be extended", path)  # fmt: skip
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UserError("unsupported BPE with a continuing-subword prefix or end-of-word suffix", path)
    style, replacement = _style(data)
    if style is None:
        raise UserError("unsupported BPE: neither a ByteLevel nor a Metaspace pre-tokenizer", path)
    vocab = dict(model["vocab"])
    strings = {i: s for s, i in vocab.items()}
    merges = merge_pairs(model)
    added = data.get("added_tokens") or []
    barrier = {i for s, i in vocab.items() if model.get("byte_fallback") and BYTE_TOKEN.match(s)}
    if model.get("unk_token") in vocab:
        barrier.add(vocab[model["unk_token"]])
    cross = cross_word_tokens(vocab, replacement)
    return BaseTokenizer(
        folder=folder, data=data, style=style, replacement=replacement,
        split_words=style == "metaspace" and len(cross) <= min(MAX_CROSS_WORD, len(vocab) // 100),
        cross_word_tokens=cross,
        vocab=vocab, strings=strings,
        first_new_id=1 + max([*vocab.values(), *(t["id"] for t in added)]),
        barrier_ids=barrier,
        reserved_strings={t["content"] for t in added} | {strings[i] for i in barrier},
        merge_pairs={(vocab[a], vocab[b]) for a, b in merges if a in vocab and b in vocab},
        added_outside_vocab={t["content"]: t["id"] for t in added if t["content"] not in vocab},
        _tokenizer=tokenizer,
    )  # fmt: skip


def _walk(node: Any) -> Iterable[dict]:
    """Every component dict inside a (possibly nested Sequence) normalizer / pre-tokenizer config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _style(data: dict) -> tuple[str | None, str | None]:
    for comp in _walk(data.get("pre_tokenizer")):
        if comp.get("type") == "ByteLevel":
            return "byte-level", None
        if comp.get("type") == "Metaspace":
            return "metaspace", comp.get("replacement", "▁")
    # Older Llama-2 files: no pre-tokenizer, the normalizer prepends "▁" and replaces spaces with it.
    for comp in _walk(data.get("normalizer")):
        if comp.get("type") == "Replace" and comp.get("content") == "▁":
            return "metaspace", "▁"
    return None, None


def cross_word_tokens(vocab: dict[str, int], replacement: str | None) -> list[str]:
    """Tokens holding a word boundary after their start (e.g. ``s▁the``, ``e▁``, Gemma's ``>▁</``).

    SentencePiece's own models hold none or a handful, but a ``tokenizers`` BPE trained with
    ``split=False`` holds many; then splitting text into words would not match how the base tokenizes it.
    """
    if not replacement:
        return []
    return sorted(s for s in vocab if replacement in s.lstrip(replacement))


def unit_splitter(base: BaseTokenizer) -> Callable[[str], list[str]]:
    """A function from one document to its units, as the base's model sees them."""
    tok = base.tokenizer()
    normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer
    r = re.escape(base.replacement or "▁")
    boundary = re.compile(f"(?<=[^{r}])(?={r})")  # before a run of ▁ that follows a word
    # every occurrence (overlapping ones too) of a cross-word token: no split inside it
    cross = re.compile("(?=(" + "|".join(map(re.escape, base.cross_word_tokens)) + "))") \
        if base.cross_word_tokens else None  # fmt: skip

    def split(piece: str) -> list[str]:
        cuts = [m.start() for m in boundary.finditer(piece)]
        if cross is not None and cuts:
            inside = {p for m in cross.finditer(piece) for t in _matches_at(piece, m.start())
                      for p in range(m.start() + 1, m.start() + len(t))}  # fmt: skip
            cuts = [c for c in cuts if c not in inside]
        edges = [0, *cuts, len(piece)]
        return [piece[a:b] for a, b in itertools.pairwise(edges) if a < b]

    def _matches_at(piece: str, start: int) -> list[str]:
        return [t for t in base.cross_word_tokens if piece.startswith(t, start)]

    def units(text: str) -> list[str]:
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        pieces = [p for p, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else [text]
        if not base.split_words:
            return pieces
        return [u for p in pieces for u in split(p)]

    return units


def count_units(base: BaseTokenizer, texts: Iterable[str]) -> Counter[str]:
    """How often each unit occurs in ``texts`` (streamed: memory grows with distinct units only)."""
    units = unit_splitter(base)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(units(text))
    return counts
