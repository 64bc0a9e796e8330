"""Streams of tokenized documents for packing: parallel batched encoding, epochs, bounded shuffling.

The worker pool is driven by hand (``submit`` with at most a few batches in flight) because the
ready-made routes do not stream: ``Pool.imap`` and ``Executor.map`` read their whole input iterator
ahead of the workers (so memory grows with the corpus), and ``datasets.map(num_proc=)`` needs the corpus
materialised as an Arrow dataset first, while ``IterableDataset.map`` has no ``num_proc``. Results come
back in submission order, so the output does not depend on the number of workers. A
``ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: a worker that dies (killed for memory)
raises ``BrokenProcessPool`` instead of leaving the packer waiting for ever.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from langadapt.corpus.readers import iter_documents
from langadapt.data.tokens import SpecialTokens
from langadapt.errors import UserError

Encoded = tuple[np.ndarray, np.ndarray]
"""A batch of documents: all token ids concatenated (uint32) and the end offset of each document."""

_WORKER: dict = {}


def _init_worker(tokenizer_json: str, special: SpecialTokens, threads: str | None) -> None:
    if threads is not None:
        # Several worker processes each running a full Rayon pool would oversubscribe the cores.
        os.environ["RAYON_NUM_THREADS"] = threads
    from tokenizers import Tokenizer

    _WORKER["tok"] = Tokenizer.from_file(tokenizer_json)
    _WORKER["special"] = special


def _encode(texts: list[str]) -> Encoded:
    """[BOS] + ids + [EOS] for every text, as one flat array (pickles far faster than lists of ints)."""
    special: SpecialTokens = _WORKER["special"]
    head = [] if special.bos_id is None else [special.bos_id]
    docs = [
        head + enc.ids + [special.eos_id]
        for enc in _WORKER["tok"].encode_batch(texts, add_special_tokens=False)
    ]
    ends = np.cumsum([len(d) for d in docs], dtype=np.int64)
    flat = np.fromiter((t for d in docs for t in d), dtype=np.uint32, count=int(ends[-1]) if len(ends) else 0)
    return flat, ends


class Encoder:
    """Encodes batches of texts in ``workers`` processes (in this process when workers <= 1)."""

    def __init__(
        self, tokenizer_json: Path, special: SpecialTokens, workers: int, batch_size: int = 64
    ) -> None:
        self.batch_size = batch_size
        self.max_in_flight = 2 * max(workers, 1)
        self.pool: ProcessPoolExecutor | None = None
        if workers > 1:
            # spawn: the parent may already run Rayon threads (tokenizers), which fork would copy badly.
            self.pool = ProcessPoolExecutor(
                workers, mp.get_context("spawn"), _init_worker, (str(tokenizer_json), special, "1")
            )
        else:
            _init_worker(str(tokenizer_json), special, None)

    def encode(self, texts: Iterator[str]) -> Iterator[np.ndarray]:
        """Token arrays of ``texts`` in order, with a bounded number of batches ahead of the consumer."""
        pending: deque[Future | Encoded] = deque()
        for batch in _batches(texts, self.batch_size):
            pending.append(self.pool.submit(_encode, batch) if self.pool else _encode(batch))
            if len(pending) >= self.max_in_flight:
                yield from _split(pending.popleft())
        while pending:
            yield from _split(pending.popleft())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _batches(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _split(result: Future | Encoded) -> Iterator[np.ndarray]:
    flat, ends = result.result() if isinstance(result, Future) else result
    return iter(np.split(flat, ends[:-1]))


def shuffled(items: Iterator[str], rng: random.Random, buffer: int) -> Iterator[str]:
    """Bounded-buffer shuffle: memory is ``buffer`` items whatever the stream's length."""
    buf: list[str] = []
    for item in items:
        if len(buf) < buffer:
            buf.append(item)
            continue
        j = rng.randrange(buffer)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


@dataclass
class Source:
    """One corpus read as epochs of shuffled, tokenized documents; counts what the packer used."""

    name: str
    paths: list[str]
    text_field: str
    seed: int
    shuffle_buffer: int = 4096
    epoch: int = 0
    """Epochs started (1 while the first pass is being read)."""
    pass_tokens: int | None = None
    """Tokens in one full pass (known once the first pass has been read to the end)."""
    pass_documents: int | None = None
    used_tokens: int = 0
    used_documents: int = 0
    _read_tokens: int = field(default=0, repr=False)
    _read_documents: int = field(default=0, repr=False)

    def documents(self, encoder: Encoder) -> Iterator[np.ndarray]:
        """Token arrays for ever: epoch after epoch, each in its own seeded file and document order."""
        while True:
            self.epoch += 1
            # A string seed is hashed with sha512 by random.Random: stable across runs and platforms.
            rng = random.Random(f"{self.seed}:{self.name}:{self.epoch}")
            files = list(self.paths)
            rng.shuffle(files)
            texts = shuffled(iter_documents(files, self.text_field), rng, self.shuffle_buffer)
            for doc in encoder.encode(texts):
                self._read_tokens += len(doc)
                self._read_documents += 1
                yield doc
            if self._read_documents == 0:  # guards the loop; check_corpus already rejects empty input
                raise UserError(f"the {self.name} corpus holds no documents", self.paths[0])
            if self.pass_tokens is None:
                self.pass_tokens, self.pass_documents = self._read_tokens, self._read_documents

    def epochs_used(self) -> float | None:
        """Used tokens / tokens of one pass (None while the first pass has not been read to its end)."""
        return None if not self.pass_tokens else self.used_tokens / self.pass_tokens
