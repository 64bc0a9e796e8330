"""datatrove PipelineSteps for what datatrove lacks: our input formats, byte counts, Unicode/URL clean-up,
script ratio, language id with a model shipped in its wheel, and a word-count floor for any script.

Everything else (mojibake repair, e-mail regex, Gopher filters, exact and MinHash dedup, writers) is
datatrove's own; boilerplate removal lives in boilerplate.py.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters import FTFYFormatter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.formatters.pii import PIIReplacer
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseReader

from langadapt.corpus import scripts
from langadapt.corpus.readers import iter_documents

# datatrove's PIIFormatter e-mail pattern, reused so both tools agree on what an address is.
EMAIL_RE = (
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
)
# Scheme or www. URLs; a trailing sentence punctuation mark is left outside the URL.
URL_RE = r"\b(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]"


class CorpusReader(BaseReader):
    """Reads a fixed list of files; task ``rank`` takes files rank, rank + world_size, ...

    jsonl[.gz] and parquet go through datatrove's readers; .txt (blank-line separated documents) and saved
    ``datasets`` folders through langadapt's own readers, which datatrove has no equivalent for.
    """

    name = "📚 langadapt input"

    def __init__(self, files: list[str], text_key: str = "text") -> None:
        super().__init__(text_key=text_key)
        self.files = list(files)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for path in self.files[rank::world_size]:
            self.stat_update("input_files")
            for doc in self._read(Path(path)):
                self.update_doc_stats(doc)
                yield doc

    def _read(self, path: Path) -> DocumentsPipeline:
        name = path.name.lower()
        if path.is_file() and name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
            reader = JsonlReader(str(path.parent), text_key=self.text_key, compression="infer")
            yield from reader.read_file(path.name)
        elif path.is_file() and name.endswith(".parquet"):
            yield from ParquetReader(str(path.parent), text_key=self.text_key).read_file(path.name)
        else:

            for i, text in enumerate(iter_documents([path], self.text_key)):
                yield Document(text=text, id=f"{path}/{i}", metadata={"file_path": str(path)})


class RankFileReader(JsonlReader):
    """Reads back exactly the ``{rank:05d}.jsonl`` an earlier stage wrote for the same task.

    datatrove's default sharding lists the folder and deals files out by position, which pairs the wrong
    files with ranks when an earlier task kept no document and wrote no file; MinHash's filter needs each
    rank to see the same documents, in the same order, as its signature stage did.
    """

    name = "📖 stage input"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        name = f"{rank:05d}.jsonl"
        yield from self.read_files_shard([name] if self.data_folder.exists(name) else [])


class Meter(PipelineStep):
    """Counts the documents and UTF-8 bytes that pass this point (between two steps)."""

    type = "📏 - METER"

    def __init__(self, label: str) -> None:
        self.name = label  # before super().__init__(): the stats are keyed by str(self)
        super().__init__()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("docs")
            self.stat_update("bytes", value=len(doc.text.encode("utf-8")), unit="doc")
            yield doc


# Where ftfy can have something to fix: UTF-8 read as Latin-1/cp1252 (a lead byte as Â-ô, then a
# continuation byte as a C1/cp1252 punctuation or Latin-1 symbol), UTF-8 read as cp1251 ("Рё", "С‚"),
# HTML entities, control characters and lone surrogates. ftfy costs ~1 ms per 1 kB; this check, 30x less.
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
    "|Р[°±µё·ѕ]|С[‚ЂЃ]|&#?[a-zA-Z0-9]{2,8};|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]"
)


class MojibakeFixer(FTFYFormatter):
    """datatrove's FTFYFormatter (its conservative settings), run only where a mojibake hint appears."""

    name = "😎 FTFY (where it applies)"

    def format(self, text: str) -> str:
        if _MOJIBAKE_HINT.search(text) is None:
            return text
        self.stat_update("ftfy_runs")
        return super().format(text)


class TextNormalizer(BaseFormatter):
    """NFC, whitespace clean-up, and URLs / e-mail addresses replaced by placeholders ('' keeps them).

    Whitespace: tabs and runs of spaces become one space, lines lose trailing spaces, and more than one
    blank line becomes one (a blank line is the paragraph separator the boilerplate step relies on).
    Zero-width joiners stay: Persian, Indic and emoji text need them.
    """

    name = "🧹 normalise"

    def __init__(self, url_placeholder: str = "<URL>", email_placeholder: str = "<EMAIL>") -> None:
        super().__init__()
        self.url = PIIReplacer(URL_RE, url_placeholder) if url_placeholder else None
        self.email = PIIReplacer(EMAIL_RE, email_placeholder) if email_placeholder else None
        self._spaces = re.compile(r"[^\S\n]+")
        self._blank = re.compile(r"\n\s*\n\s*")

    def format(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        if self.url:  # URLs first: "http://user@host" is a URL, not an e-mail address
            text = self.url.replace(text)
        if self.email:
            text = self.email.replace(text)
        text = self._spaces.sub(" ", text)
        text = "\n".join(line.strip() for line in text.split("\n"))
        return self._blank.sub("\n\n", text).strip()


class ScriptFilter(BaseFilter):
    """Keeps a document when the share of its letters in the language's script(s) reaches ``min_ratio``."""

    name = "🔤 script ratio"

    def __init__(self, lang: str, min_ratio: float) -> None:
        super().__init__()
        self.lang, self.min_ratio = lang, min_ratio
        self.scripts = scripts.scripts_for(lang)
        self.pattern = scripts.script_pattern(self.scripts)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        ratio, letters = scripts.script_ratio(doc.text, self.pattern)
        doc.metadata["script_ratio"] = round(ratio, 3)
        if not letters:
            return False, "no_letters"
        return (True, None) if ratio >= self.min_ratio else (False, "script_ratio")


class LanguageIdFilter(BaseFilter):
    """py3langid (its model ships inside the wheel: nothing is downloaded) on the first ``max_chars``.

    The drop reason names the language found (``lang_en``), so the data card can say what was removed.
    """

    name = "🌍 language id (py3langid)"

    def __init__(self, lang: str, min_score: float, max_chars: int = 2000) -> None:
        super().__init__()
        self.lang, self.min_score, self.max_chars = lang, min_score, max_chars

    def sample(self, text: str) -> str:
        """py3langid's cost grows with length (a Python loop per byte): a long document is judged on
        its head and its middle, ``max_chars`` in all, so a foreign header alone does not decide."""
        if len(text) <= self.max_chars:
            return text
        half, mid = self.max_chars // 2, len(text) // 2
        return f"{text[:half]}\n{text[mid : mid + half]}"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        # Loaded in the worker on first use (cached per process), never pickled with the step.
        lang, score = scripts.langid_model().classify(self.sample(doc.text))
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(score), 4)
        if lang != self.lang:
            return False, f"lang_{lang}"
        return (True, None) if score >= self.min_score else (False, "low_language_score")


class MinWordsFilter(BaseFilter):
    """Drops documents under ``min_words`` words (letters / 2 for scripts written without spaces)."""

    name = "📏 too short"

    def __init__(self, lang: str, min_words: int, reason: str = "too_short") -> None:
        self.name = f"📏 {reason}"  # one per place in the pipeline: stats are keyed by name
        super().__init__()
        self.min_words, self.reason = min_words, reason
        self.unspaced = scripts.is_unspaced(lang)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if scripts.word_count(doc.text, self.unspaced) >= self.min_words:
            return True, None
        return False, self.reason


def xxh64_utf8(text: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


class MinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash stage 1, hashing shingles as UTF-8 bytes: datatrove hands xxhash a str, which
    xxhash >= 4 rejects ("Strings must be encoded before hashing"); sha1 works but is 20x slower."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.config.hash_config.precision != 64 or self.config.hash_config.hash_fc != "xxhash":
            raise ValueError("MinhashSignature hashes with 64-bit xxhash")
        self._hash_func = xxh64_utf8
