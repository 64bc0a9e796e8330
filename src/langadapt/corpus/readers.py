"""Streaming corpus readers shared by every stage.

Formats: ``.txt`` (a blank line separates documents), ``.jsonl`` / ``.jsonl.gz`` (one JSON object a line,
the text in ``text_field``), ``.parquet`` (read in record batches), and a ``datasets`` folder saved with
``save_to_disk`` (memory-mapped Arrow). Every reader yields one document at a time, so a 10 GB corpus
never sits in memory. A bad file is a :class:`UserError` naming the file.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from langadapt.errors import UserError

SUPPORTED = ".txt, .jsonl, .jsonl.gz, .parquet, or a datasets folder saved with save_to_disk"


def iter_documents(
    paths: Iterable[str | Path], text_field: str = "text", max_docs: int | None = None
) -> Iterator[str]:
    """Yield the non-empty documents of every file in order (``max_docs`` in total at most)."""
    count = 0
    for path in expand_paths(paths):
        for doc in _iter_one(Path(path), text_field):
            if not doc.strip():
                continue
            yield doc
            count += 1
            if max_docs is not None and count >= max_docs:
                return


def check_corpus(paths: Iterable[str | Path], text_field: str = "text") -> list[Path]:
    """Fail early, naming the file, when a corpus is missing, unreadable or holds no text."""
    checked = []
    for path in expand_paths(paths):
        if not path.exists():
            raise UserError("corpus file not found", path)
        if next(iter_documents([path], text_field), None) is None:
            raise UserError("corpus holds no text", path)
        checked.append(path)
    if not checked:
        raise UserError("no corpus file given")
    return checked


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Paths with glob patterns expanded (sorted), e.g. ``corpus/shards/*`` from corpus prepare.

    A pattern that matches nothing is a UserError; a path that exists is taken as is, even if its name
    holds glob characters.
    """
    out: list[Path] = []
    for path in paths:
        text = str(path)
        if glob.has_magic(text) and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise UserError("no file matches this pattern", text)
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(path))
    return out


def _iter_one(path: Path, text_field: str) -> Iterator[str]:
    if not path.exists():
        raise UserError("corpus file not found", path)
    name = path.name.lower()
    try:
        if path.is_dir():
            yield from _iter_saved_dataset(path, text_field)
        elif name.endswith((".jsonl.gz", ".json.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                yield from _iter_jsonl(fh, path, text_field)
        elif name.endswith((".jsonl", ".json")):
            with open(path, encoding="utf-8") as fh:
                yield from _iter_jsonl(fh, path, text_field)
        elif name.endswith(".parquet"):
            yield from _iter_parquet(path, text_field)
        elif name.endswith(".txt") or "." not in name:
            with open(path, encoding="utf-8") as fh:
                _reject_binary(fh, path)
                yield from _iter_txt(fh)
        else:
            raise UserError(f"unsupported corpus format (use {SUPPORTED})", path)
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", path) from exc
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"cannot read: {exc}", path) from exc


def _reject_binary(fh: io.TextIOBase, path: Path) -> None:
    head = fh.read(4096)
    if "\x00" in head:
        raise UserError("binary file, not text", path)
    fh.seek(0)


def _iter_txt(fh: io.TextIOBase) -> Iterator[str]:
    lines: list[str] = []
    for line in fh:
        if line.strip():
            lines.append(line.rstrip("\n"))
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def _iter_jsonl(fh: io.TextIOBase, path: Path, text_field: str) -> Iterator[str]:
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        if "\x00" in line:
            raise UserError("binary file, not JSON lines", path)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"line {lineno} is not JSON ({exc.msg})", path) from exc
        if not isinstance(record, dict) or text_field not in record:
            raise UserError(f"line {lineno} has no field {text_field!r} (set --text-field)", path)
        text = record[text_field]
        if not isinstance(text, str):
            raise UserError(f"line {lineno}: field {text_field!r} is not a string", path)
        yield text


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for non-parquet files
        raise UserError(f"not a parquet file ({exc})", path) from exc


def _saved_dataset(path: Path, splits: tuple[str, ...], hint: str = "") -> Any:
    """A ``save_to_disk`` folder as a Dataset (memory-mapped: rows are read lazily); of a DatasetDict the
    first of ``splits`` it holds, else its first split."""
    if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        raise UserError(f"folder is not a saved datasets folder{hint}", path)
    from datasets import load_from_disk

    ds = load_from_disk(str(path))
    if hasattr(ds, "keys"):
        ds = ds[next((s for s in splits if s in ds), next(iter(ds.keys())))]
    return ds


def _iter_parquet(path: Path, text_field: str) -> Iterator[str]:
    pfile = _parquet_file(path)
    if text_field not in pfile.schema_arrow.names:
        raise UserError(f"parquet file has no column {text_field!r} (set --text-field)", path)
    for batch in pfile.iter_batches(batch_size=1024, columns=[text_field]):
        yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


def _iter_saved_dataset(path: Path, text_field: str) -> Iterator[str]:
    ds = _saved_dataset(path, ("train",), f" (use {SUPPORTED})")
    if text_field not in ds.column_names:
        raise UserError(f"dataset has no column {text_field!r} (set --text-field)", path)
    for start in range(0, len(ds), 1024):
        yield from ds[start : start + 1024][text_field]


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    )


def iter_json_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of a jsonl[.gz] file, whole records (task and
    parallel files); a bad line is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path)
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"line {lineno} is not JSON ({exc.msg})", path) from exc
                if not isinstance(record, dict):
                    raise UserError(f"line {lineno} is not a JSON object", path)
                yield lineno, record
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", path) from exc
    except (gzip.BadGzipFile, EOFError) as exc:
        raise UserError(f"cannot read: {exc}", path) from exc


def read_heldout(corpora: dict[str, list[str]], max_docs: int | None, text_field: str = "text",
                 max_chars: int | None = None) -> dict[str, list[str]]:  # fmt: skip
    """``{"target": [...], "english": [...]}``: the first ``max_docs`` documents of each named corpus
    (corpora without files are left out), each cut to its first ``max_chars`` characters
    (:func:`cut_document`), read once, up front."""
    return {
        name: [cut_document(doc, max_chars) for doc in iter_documents(check_corpus(files, text_field),
                                                                       text_field, max_docs)]
        for name, files in corpora.items()
        if files
    }  # fmt: skip


def cut_document(text: str, max_chars: int | None) -> str:
    """The first ``max_chars`` characters of ``text``, cut back to the last whitespace if there is one in
    the second half (unspaced scripts: at ``max_chars``). Cutting text, not tokens, gives every model the
    same bytes to score, whatever its tokenizer."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return cut[:space] if space >= max_chars // 2 else cut


def read_pairs(path: str | Path, src: str, tgt: str, split: str | None) -> list[dict[str, Any]]:
    """The pairs of a parallel jsonl[.gz] with both fields non-blank, of ``split`` where a pair has one."""
    path = Path(path)
    pairs, total = [], 0
    for lineno, rec in iter_json_records(path):
        total += 1
        for lang in (src, tgt):
            if lang not in rec:
                raise UserError(f"line {lineno} has no field {lang!r} (set --src / --tgt)", path)
            if not isinstance(rec[lang], str):
                raise UserError(f"line {lineno}: field {lang!r} is not a string", path)
        if split and rec.get("split", split) != split:
            continue
        if rec[src].strip() and rec[tgt].strip():
            pairs.append(rec)
    if not total:
        raise UserError("parallel file holds no pairs", path)
    return pairs


def iter_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``line N`` / ``row N``, record) of every whole record of one jsonl[.gz] / json[.gz] / parquet file or
    saved datasets folder (chat and preference data; of a DatasetDict the train, train_sft or train_prefs
    split, else the first)."""
    name = path.name.lower()
    if not path.exists():
        raise UserError("file not found", path)
    if path.is_dir():
        for row, record in enumerate(_saved_dataset(path, ("train", "train_sft", "train_prefs")), 1):
            yield f"row {row}", record
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        for lineno, record in iter_json_records(path):
            yield f"line {lineno}", record
    elif name.endswith(".parquet"):
        row = 0
        for batch in _parquet_file(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"row {row}", record
    else:
        raise UserError(f"unsupported data format (use {SUPPORTED.replace('.txt, ', '')})", path)
