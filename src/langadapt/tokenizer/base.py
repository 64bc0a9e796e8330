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

Counting can run in worker processes (:func:`count_units`). Not through datatrove's executors, which the
corpus stage uses: they run a pipeline of file-to-file steps (each task writes its own output files and
logs, and tasks are cut by input file, so one large ``.jsonl.gz`` would be one task); counting needs one
merged Counter back in this process, from any number of files, with ``max_docs`` and reader errors exactly
as with one process. So this process reads the documents with the corpus readers and a process pool
counts batches of them.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import operator
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
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


def unit_splitter(base: BaseTokenizer) -> UnitSplitter:
    """A function from one document to its units, as the base's model sees them."""
    tok = base.tokenizer()
    splitter = UnitSplitter(tok.normalizer, tok.pre_tokenizer, base.replacement or "▁", base.split_words,
                            list(base.cross_word_tokens))  # fmt: skip
    splitter.chunked = _chunks_split_exactly(base, splitter)
    return splitter


@dataclass
class UnitSplitter:
    """One document -> its units. Picklable (``tokenizers`` normalizers and pre-tokenizers pickle as their
    JSON, compiled patterns as their source), so counting processes get their own copy."""

    normalizer: Any
    pre_tokenizer: Any
    replacement: str
    split_words: bool
    cross_word_tokens: list[str]
    chunked: bool = False
    """Count space-separated chunks (``CHUNK_CUT``) first and pre-tokenize each distinct chunk once: only
    where the base always splits at those cuts (:func:`_chunks_split_exactly`)."""

    def __post_init__(self) -> None:
        r = re.escape(self.replacement)
        self._boundary = re.compile(f"(?<=[^{r}])(?={r})")  # before a run of ▁ that follows a word
        # every occurrence (overlapping ones too) of a cross-word token: no split inside it
        self._cross = re.compile("(?=(" + "|".join(map(re.escape, self.cross_word_tokens)) + "))") \
            if self.cross_word_tokens else None  # fmt: skip

    def _split(self, piece: str) -> list[str]:
        cuts = [m.start() for m in self._boundary.finditer(piece)]
        if self._cross is not None and cuts:
            inside = {p for m in self._cross.finditer(piece) for t in self._matches_at(piece, m.start())
                      for p in range(m.start() + 1, m.start() + len(t))}  # fmt: skip
            cuts = [c for c in cuts if c not in inside]
        edges = [0, *cuts, len(piece)]
        return [piece[a:b] for a, b in itertools.pairwise(edges) if a < b]

    def _matches_at(self, piece: str, start: int) -> list[str]:
        return [t for t in self.cross_word_tokens if piece.startswith(t, start)]

    def _pieces(self, text: str) -> Iterable[str]:
        if self.normalizer is not None:
            text = self.normalizer.normalize_str(text)
        if self.pre_tokenizer is None:
            return [text]
        return map(_first, self.pre_tokenizer.pre_tokenize_str(text))

    def __call__(self, text: str) -> list[str]:
        pieces = self._pieces(text)
        if not self.split_words:
            return list(pieces)
        return [u for p in pieces for u in self._split(p)]

    def count(self, texts: Iterable[str]) -> Counter[str]:
        """How often each chunk (``chunked``) or else each unit occurs in ``texts``: the hot loop, so
        Counter's C counting loop runs straight over the split's output."""
        counts: Counter[str] = Counter()
        update = counts.update
        if self.chunked:  # a C regex split: ~5x faster than pre-tokenizing (Python objects per pre-token)
            cut = CHUNK_CUT.split
            for text in texts:
                update(cut(text))
        elif self.split_words:
            for text in texts:
                update(self(text))
        else:
            for text in texts:
                update(self._pieces(text))
        return counts

    def units_of(self, chunks: Iterable[tuple[str, int]]) -> Counter[str]:
        """Unit counts of (chunk, count) pairs."""
        counts: Counter[str] = Counter()
        for chunk, n in chunks:
            for unit in self(chunk):
                counts[unit] += n
        return counts


_first = operator.itemgetter(0)

#: Where ``chunked`` counting cuts: before a space that follows a letter, digit, ``_`` or ASCII punctuation.
#: The byte-level split patterns in use (GPT-2, Llama-3/4, Qwen, tekken) never keep such a character and
#: the space after it in one pre-token (their punctuation runs take only ``\r\n``, or ``/``, after them),
#: and none of them looks behind; the characters are ones every Unicode version calls non-space.
CHUNK_CUT = re.compile(r"(?<=[\w!-/:-@\[-`{-~])(?= )")
#: Normalizers and pre-tokenizers whose output on a text is the concatenation of their output on its chunks
#: (NFC: a space is a starter that composes with nothing, so NFC never acts across it).
_CHUNKABLE_NORMALIZERS = {"NFC"}
_CHUNKABLE_PRE_TOKENIZERS = {"ByteLevel", "Split", "Digits", "Sequence"}
#: Checked on every base before chunked counting is used: spaces, tabs, newlines, punctuation before and
#: after spaces, contractions, digits, non-Latin scripts, combining marks, no-break and ideographic spaces.
_PROBE = (
    'Hello world, it\'s 2024!  Two  spaces\tand\ttabs \n\nNew para. (Paren) x.\n y "quoted" a-b c_d '
    "12345 678.9 ÁRVÍZTŰRŐ tükörfúrógép I'm we'LL ... 日本語 テスト — dash – x ´accent ¿qué? a ,b a . b "
    "e\u0301 x \u00a0nbsp\u00a0 \u3000ideo /path/to a/ b: c; d! e? f) g] h} i' j\" k  \n  l   end  "
)


def _chunks_split_exactly(base: BaseTokenizer, splitter: UnitSplitter) -> bool:
    """Whether counting chunks first gives exactly the units: a byte-level base whose normalizer and
    pre-tokenizer are of the kinds above, that splits the probe text at every chunk cut. Anything else
    (Metaspace bases: their normalizers prepend ``▁`` to every text) is counted document by document."""
    data = base.data
    normalizer, pre_tokenizer = data.get("normalizer"), data.get("pre_tokenizer")
    if base.style != "byte-level" or pre_tokenizer is None:
        return False
    if normalizer is not None and normalizer.get("type") not in _CHUNKABLE_NORMALIZERS:
        return False
    if any(c.get("type") not in _CHUNKABLE_PRE_TOKENIZERS for c in _walk(pre_tokenizer) if "type" in c):
        return False
    whole = splitter(_PROBE)
    return whole == [u for chunk in CHUNK_CUT.split(_PROBE) for u in splitter(chunk)]


#: Characters of text in one counting task of a worker process: large enough that shipping the batch and
#: merging the Counter it returns cost little next to splitting it, small enough that a 10 MB corpus still
#: gives every worker several tasks.
BATCH_CHARS = 1 << 20
#: Distinct chunks turned into units per task.
CHUNKS_PER_TASK = 50_000


def count_units(base: BaseTokenizer, texts: Iterable[str], workers: int = 1) -> Counter[str]:
    """How often each unit occurs in ``texts``, in ``workers`` processes, units in sorted order.

    Streamed: memory grows with distinct units (or distinct chunks), not with the text: each process holds
    one Counter, and at most two batches per worker are in flight. Documents are read here, by the corpus
    readers, and dealt out in batches, so any format and ``max_docs`` behave as with one process. Sorting
    makes the Counter the same, order included, for any ``workers`` (counts are sums: only the order
    could differ).
    """
    splitter = unit_splitter(base)
    if workers <= 1:
        counts = _merged(map(splitter.count, _text_batches(texts, BATCH_CHARS)))
        if splitter.chunked:
            counts = splitter.units_of(counts.items())
    else:
        # spawn: the parent already ran `tokenizers`' Rayon threads, which fork would copy badly (as data pack)
        with ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_counter, (splitter,)) as pool:
            counts = _merged(_bounded_map(pool, _count_batch, _text_batches(texts, BATCH_CHARS), workers))
            if splitter.chunked:
                items = iter(counts.items())  # (itertools.batched is Python >= 3.12)
                parts = iter(lambda: tuple(itertools.islice(items, CHUNKS_PER_TASK)), ())
                counts = _merged(_bounded_map(pool, _units_of, parts, workers))
    return Counter(dict(sorted(counts.items())))


def _bounded_map(pool: ProcessPoolExecutor, fn: Callable, tasks: Iterable, workers: int) -> Iterator:
    """``fn`` of every task in the pool, in order, with at most two tasks per worker submitted ahead (so
    the reader waits for the workers instead of filling memory)."""
    pending: deque[Future] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a bad file or ^C: drop the queued batches
        raise


def _merged(parts: Iterable[Counter[str]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for part in parts:
        _merge(counts, part)
    return counts


def _merge(counts: Counter[str], part: Counter[str]) -> None:
    """One worker's counts into the total (Counter.update of a mapping: dict.update while the total is
    empty, then one add per unit)."""
    counts.update(part)


def _text_batches(texts: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_worker_splitter: UnitSplitter | None = None


def _init_counter(splitter: UnitSplitter) -> None:
    global _worker_splitter
    _worker_splitter = splitter


def _count_batch(texts: list[str]) -> Counter[str]:
    return _worker_splitter.count(texts)


def _units_of(chunks: tuple[tuple[str, int], ...]) -> Counter[str]:
    return _worker_splitter.units_of(chunks)
