"""Repeated paragraphs: inside one document, and across many documents (boilerplate).

Across documents needs the whole corpus first, so it is three datatrove steps, in the style of
datatrove's own dedup stages:

1. :class:`ParagraphSignature` (one task per input shard): the 64-bit hashes of each document's distinct
   paragraphs are streamed to disk, split into ``partitions`` files by hash, so memory stays flat.
2. :class:`BoilerplateFinder` (one task per partition): counts, per hash, the documents holding it and
   keeps those found in at least ``min_share`` of all documents or in ``min_docs`` documents.
3. :class:`BoilerplateRemover` (one task per input shard): drops those paragraphs.

A paragraph is a block between blank lines, compared after collapsing whitespace.
"""

from __future__ import annotations

import array
import json
import math
import re

import numpy as np
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.typeshelper import StatHints

from langadapt.corpus import scripts

PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
FLUSH_EVERY = 1 << 20  # hashes buffered per partition before they are appended to disk (8 MiB)


def paragraphs(text: str) -> list[str]:
    return [p for p in PARAGRAPH_SPLIT.split(text) if p.strip()]


def paragraph_hash(paragraph: str) -> int:
    return xxhash.xxh64_intdigest(" ".join(paragraph.split()).encode("utf-8"))


class RepeatedParagraphRemover(PipelineStep):
    """Keeps the first occurrence of each paragraph inside a document and drops the repeats.

    Paragraphs under ``min_words`` words are left alone: a repeated heading ("Example:") or table cell
    ("Yes") is structure, not spam, and dropping it garbles the page.
    """

    type = "✂️ - FORMAT"
    name = "🔁 repeated paragraphs in a document"

    def __init__(self, lang: str, min_words: int = 3) -> None:
        super().__init__()
        self.min_words = min_words
        self.unspaced = scripts.is_unspaced(lang)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                paras = paragraphs(doc.text)
                seen: set[int] = set()
                kept = []
                for para in paras:
                    h = paragraph_hash(para)
                    if h not in seen or scripts.word_count(para, self.unspaced) < self.min_words:
                        seen.add(h)
                        kept.append(para)
                if len(kept) != len(paras):
                    self.stat_update("documents_changed")
                    self.stat_update("paragraphs_removed", value=len(paras) - len(kept))
                    doc.text = "\n\n".join(kept)
            yield doc


class ParagraphSignature(PipelineStep):
    """Passes documents on unchanged and records the hashes of their distinct paragraphs."""

    type = "🫂 - DEDUP"
    name = "🧾 boilerplate stage 1"

    def __init__(self, output_folder: DataFolderLike, partitions: int) -> None:
        super().__init__()
        self.output_folder = get_datafolder(output_folder)
        self.partitions = partitions

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        buffers = [array.array("Q") for _ in range(self.partitions)]
        files = [self.output_folder.open(f"{p:04d}/{rank:05d}.u64", "wb") for p in range(self.partitions)]
        n_docs = 0
        try:
            for doc in data:
                with self.track_time():
                    n_docs += 1
                    for h in {paragraph_hash(p) for p in paragraphs(doc.text)}:
                        buf = buffers[h % self.partitions]
                        buf.append(h)
                        if len(buf) >= FLUSH_EVERY:
                            files[h % self.partitions].write(buf.tobytes())
                            del buf[:]
                yield doc
            for buf, fh in zip(buffers, files):
                fh.write(buf.tobytes())
        finally:
            for fh in files:
                fh.close()
        with self.output_folder.open(f"docs/{rank:05d}.json", "w") as fh:
            json.dump({"documents": n_docs}, fh)
        self.stat_update("documents", value=n_docs)


class BoilerplateFinder(PipelineStep):
    """Task ``rank`` counts partition ``rank``'s hashes and writes those that are boilerplate."""

    type = "🫂 - DEDUP"
    name = "🧾 boilerplate stage 2"

    def __init__(self, folder: DataFolderLike, min_share: float, min_docs: int, floor: int = 3) -> None:
        super().__init__()
        self.folder = get_datafolder(folder)
        self.min_share, self.min_docs, self.floor = min_share, min_docs, floor

    def threshold(self, n_docs: int) -> int:
        """Documents a paragraph must appear in: the share, capped by min_docs, never under ``floor``."""
        by_share = math.ceil(self.min_share * n_docs)
        return max(self.floor, min(by_share, self.min_docs) if self.min_docs > 0 else by_share)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            n_docs = 0
            for name in self.folder.list_files("docs", glob_pattern="*.json"):
                with self.folder.open(name) as fh:
                    n_docs += json.load(fh)["documents"]
            chunks = []
            for name in self.folder.list_files(f"{rank:04d}", glob_pattern="*.u64"):
                with self.folder.open(name, "rb") as fh:
                    chunks.append(np.frombuffer(fh.read(), dtype="<u8"))
            hashes, counts = np.unique(np.concatenate(chunks or [np.zeros(0, "<u8")]), return_counts=True)
            boiler = hashes[counts >= self.threshold(n_docs)]
            with self.folder.open(f"found/{rank:04d}.boiler", "wb") as fh:
                fh.write(boiler.astype("<u8").tobytes())
        self.stat_update("paragraph_kinds", value=len(hashes))
        self.stat_update("boilerplate_kinds", value=len(boiler))
        return
        yield  # a generator, like every datatrove step


class BoilerplateRemover(PipelineStep):
    """Drops every paragraph that BoilerplateFinder marked; counts documents and paragraphs touched."""

    type = "✂️ - FORMAT"
    name = "🧾 boilerplate stage 3"

    def __init__(self, folder: DataFolderLike) -> None:
        super().__init__()
        self.folder = get_datafolder(folder)

    def _load(self) -> set[int]:
        found: set[int] = set()
        for name in self.folder.list_files("found", glob_pattern="*.boiler"):
            with self.folder.open(name, "rb") as fh:
                found.update(np.frombuffer(fh.read(), dtype="<u8").tolist())
        return found

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        boiler = self._load()
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                paras = paragraphs(doc.text)
                kept = [p for p in paras if paragraph_hash(p) not in boiler]
                if len(kept) != len(paras):
                    self.stat_update("documents_changed")
                    self.stat_update("paragraphs_removed", value=len(paras) - len(kept))
                    doc.text = "\n\n".join(kept)
            yield doc
