"""``data pack``: mix target and English text by token count, tokenize, pack into document-masked rows.

The packed format (``langadapt-packed-v1``) — what ``train pretrain`` reads
------------------------------------------------------------------------------
A finished folder holds::

    input_ids.bin     uint32, C-order, shape (rows, seq_len): token ids, raw bytes, no header
    position_ids.bin  uint16 (uint32 when seq_len > 65536), same shape: position inside the segment
    pack.json         format, rows, seq_len, dtypes, tokens per source, achieved ratio, epochs per source,
                      tokenizer fingerprint, BOS/EOS decision, seed, timings
    stage.json        the runner's record (config, version, seconds)
    DONE              written last; a folder without it is not a packed dataset

- Every row has exactly ``seq_len`` tokens; there is no padding anywhere.
- A *document* is ``[BOS] + encode(text, add_special_tokens=False) + [EOS]``. EOS ends every document;
  BOS is added only where the tokenizer itself would add one (see :func:`langadapt.data.tokens.special_tokens`;
  the decision and its reason are in ``pack.json["tokenizer"]``). SmolLM2: no BOS, EOS ``<|im_end|>``.
- Documents follow each other inside a row. A document longer than what is left in a row continues at
  the start of the next row as a new *segment* (no BOS repeated there).
- ``position_ids`` restart at 0 at the first token of every segment and count up by one. So a segment
  boundary is exactly ``position_ids == 0``: attend only within a segment, and do not predict the first
  token of a segment from the token before it (its label is masked, ``-100``).
- The last document of the budget is cut to fill the last row (``pack.json["truncated_last_document"]``),
  so it may lack its EOS; every other document ends with EOS.
- Rows are in stream order. Documents are already shuffled (file order per epoch + a bounded shuffle
  buffer) and the two languages are interleaved throughout, but the trainer should still draw rows
  through its own seeded permutation of row indices.

Why a numpy memmap and not ``datasets`` Arrow: measured in ``bench/pack_bench.py`` (figures in
``bench/RESULTS.md``), a random row reads 5-7x faster from the memmap than from the same rows as an
Arrow dataset (numpy format), a batch of 8 random rows ~2.7x faster, and a sequential scan about as fast
(0.9-1.7x); there is nothing to decode, and any process (DataLoader workers, every rank) maps the same
files without a cache folder.

Reader API (numpy only; import it from here or from :mod:`langadapt.data.reader`)::

    from langadapt.data.pack import PackedDataset, check_tokenizer, segment_lengths
    check_tokenizer(folder, model_or_tokenizer_dir)  # UserError if packed with another tokenizer
    ds = PackedDataset(folder)          # UserError if not a finished packed folder
    len(ds), ds.seq_len, ds.info        # rows, tokens per row, the pack.json dict
    ds[i]        -> {"input_ids": int64 (seq_len,), "position_ids": int64 (seq_len,)}
    ds.batch(ix) -> {"input_ids": int64 (B, seq_len), "position_ids": int64 (B, seq_len)}
    segment_lengths(position_ids_of_one_row) -> int64 lengths (cu_seqlens = cumsum with a leading 0)

Mixing
------
Sources are drawn greedily by deficit: the next document comes from the target corpus while its share
of the tokens written so far is at or below ``ratio``, else from English. So at every point, and at the
end of the budget, the target token count is within one document of ``ratio * tokens``. The budget is
rounded up to whole rows. A source that runs out is read again (a new *epoch*, reshuffled) while it
has been used at most ``max_epochs`` times (default 4: Muennighoff et al. 2023 find up to ~4 epochs of
repeated data nearly as good as fresh data); past that, packing stops with a UserError that says how
much text is missing.

Tokenization runs in ``workers`` processes (``encode_batch`` of the raw ``tokenizers.Tokenizer``), see
:mod:`langadapt.data.stream` for why the pool is driven by hand rather than through ``datasets.map``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from langadapt.config import PackConfig
from langadapt.corpus.readers import check_corpus
from langadapt.data.reader import (  # noqa: F401  (re-exported: the reader API lives with the format)
    FORMAT,
    INPUT_IDS,
    PACK_JSON,
    POSITION_IDS,
    PackedDataset,
    check_tokenizer,
    load_pack_info,
    segment_lengths,
)
from langadapt.data.stream import Encoder, Source
from langadapt.data.tokens import SpecialTokens, file_sha256, special_tokens, tokenizer_fingerprint
from langadapt.errors import UserError
from langadapt.models import resolve_tokenizer
from langadapt.runs import read_json, write_json_atomic

if TYPE_CHECKING:
    from typing_extensions import Self

TOKEN_DTYPE = np.uint32


def position_dtype(seq_len: int) -> np.dtype:
    return np.dtype(np.uint16 if seq_len <= 1 << 16 else np.uint32)


class RowWriter:
    """Appends documents to rows of ``seq_len`` tokens, writing whole chunks of rows sequentially.

    Written with plain ``write`` calls rather than into a growing memmap, so resident memory stays at one
    chunk however large the output gets.
    """

    def __init__(self, folder: Path, seq_len: int, chunk_rows: int = 256) -> None:
        self.seq_len = seq_len
        self.ids = np.zeros(chunk_rows * seq_len, dtype=TOKEN_DTYPE)
        self.pos = np.zeros(chunk_rows * seq_len, dtype=position_dtype(seq_len))
        self._arange = np.arange(seq_len, dtype=self.pos.dtype)
        self.cursor = 0  # next free slot in the chunk
        self.tokens = 0  # tokens written in total (flushed + in the chunk)
        self.segments = 0
        # Closed by close() / the with-block: the writer outlives any one function's scope.
        self._files = [open(folder / INPUT_IDS, "wb"), open(folder / POSITION_IDS, "wb")]  # noqa: SIM115

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, doc: np.ndarray) -> None:
        """Append one document; where a row fills up, the rest starts the next row at position 0."""
        start = 0
        while start < len(doc):
            n = min(len(doc) - start, self.seq_len - self.cursor % self.seq_len)
            self.ids[self.cursor : self.cursor + n] = doc[start : start + n]
            self.pos[self.cursor : self.cursor + n] = self._arange[:n]
            self.cursor += n
            self.tokens += n
            self.segments += 1
            start += n
            if self.cursor == len(self.ids):
                self.flush()

    def flush(self) -> None:
        for fh, arr in zip(self._files, (self.ids, self.pos)):
            fh.write(arr[: self.cursor].tobytes())
        self.cursor = 0

    def close(self) -> None:
        if self._files[0].closed:
            return
        self.flush()
        for fh in self._files:
            fh.close()


def rows_for(tokens: int, seq_len: int) -> int:
    """The token budget rounded up to whole rows."""
    return max(1, math.ceil(tokens / seq_len))


def pack(cfg: PackConfig, out: Path) -> dict[str, Any]:
    """Stage entry: write the packed rows into ``out``; return the figures (pack.json holds them all)."""
    out = Path(out)
    target_files = [str(p) for p in check_corpus(cfg.target, cfg.text_field)]
    english_files = [str(p) for p in check_corpus(cfg.english, cfg.text_field)]
    tok_dir = resolve_tokenizer(cfg.tokenizer)
    special = special_tokens(tok_dir)
    sources = {
        "target": Source("target", target_files, cfg.text_field, cfg.seed, cfg.shuffle_buffer),
        "english": Source("english", english_files, cfg.text_field, cfg.seed, cfg.shuffle_buffer),
    }
    start = time.perf_counter()
    encoder = Encoder(tok_dir / "tokenizer.json", special, cfg.workers)
    try:
        with RowWriter(out, cfg.seq_len) as writer:
            truncated = _mix(cfg, sources, encoder, writer)
    finally:
        encoder.close()
    info = _pack_info(cfg, tok_dir, special, sources, writer, truncated)
    seconds = time.perf_counter() - start
    info["seconds"] = round(seconds, 3)
    info["tokens_per_second"] = round(info["tokens"] / seconds)
    write_json_atomic(out / PACK_JSON, info)
    return {"rows": info["rows"], "tokens": info["tokens"], "ratio_achieved": info["ratio_achieved"]}


def _mix(cfg: PackConfig, sources: dict[str, Source], encoder: Encoder, writer: RowWriter) -> bool:
    """Fill ``rows_for(tokens)`` rows, target or English by deficit; True if the last document was cut."""
    budget = rows_for(cfg.tokens, cfg.seq_len) * cfg.seq_len
    streams = {name: src.documents(encoder) for name, src in sources.items()}
    target, english = sources["target"], sources["english"]
    while writer.tokens < budget:
        src = target if target.used_tokens <= cfg.ratio * writer.tokens else english  # by deficit
        doc = next(streams[src.name])
        take = min(len(doc), budget - writer.tokens)
        writer.add(doc[:take])
        src.used_tokens += take
        src.used_documents += 1
        share = cfg.ratio if src is target else 1 - cfg.ratio
        _check_epochs(src, cfg.max_epochs, needed=round(share * budget))
        if take < len(doc):
            return True
    return False


def _check_epochs(src: Source, max_epochs: float, needed: int) -> None:
    epochs = src.epochs_used()
    if epochs is not None and epochs > max_epochs:
        allowed = int(max_epochs * src.pass_tokens)
        raise UserError(
            f"the {src.name} corpus runs out: the mix needs ~{needed:,} tokens of it, one pass holds "
            f"{src.pass_tokens:,} and max_epochs={max_epochs:g} allows {allowed:,}; add text, lower "
            "--tokens or raise --max-epochs",
            src.paths[0],
        )


def _pack_info(cfg: PackConfig, tok_dir: Path, special: SpecialTokens, sources: dict[str, Source],
               writer: RowWriter, truncated: bool) -> dict[str, Any]:  # fmt: skip
    from tokenizers import Tokenizer

    total = writer.tokens
    shape = [total // cfg.seq_len, cfg.seq_len]
    return {
        "format": FORMAT,
        "storage": "numpy-memmap",
        "files": {
            INPUT_IDS: {"dtype": np.dtype(TOKEN_DTYPE).name, "shape": shape},
            POSITION_IDS: {"dtype": position_dtype(cfg.seq_len).name, "shape": shape},
        },
        "rows": shape[0],
        "seq_len": cfg.seq_len,
        "tokens": total,
        "tokens_requested": cfg.tokens,
        "segments": writer.segments,
        "ratio_requested": cfg.ratio,
        "ratio_achieved": sources["target"].used_tokens / total,
        "sources": {name: _source_info(src) for name, src in sources.items()},
        "max_epochs": cfg.max_epochs,
        "truncated_last_document": truncated,
        "seed": cfg.seed,
        "shuffle": {"file_order": "per epoch", "document_buffer": cfg.shuffle_buffer},
        "tokenizer": {
            "path": str(tok_dir),
            "fingerprint": tokenizer_fingerprint(tok_dir),
            "tokenizer_json_sha256": file_sha256(tok_dir / "tokenizer.json"),
            "vocab_size": Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size(True),
            **dataclasses.asdict(special),  # eos, eos_id, bos, bos_id, bos_reason
        },
    }


def _source_info(src: Source) -> dict[str, Any]:
    epochs = src.epochs_used()
    return {
        "files": src.paths,
        "tokens": src.used_tokens,
        "documents": src.used_documents,
        "epochs": None if epochs is None else round(epochs, 4),
        "epochs_started": src.epoch,
        "pass_tokens": src.pass_tokens,
        "pass_documents": src.pass_documents,
    }


def print_pack(record: dict[str, Any], out: Path) -> None:
    """One summary line per source, then the totals (what the CLI prints; from ``out/pack.json``)."""
    info = read_json(Path(out) / PACK_JSON)
    for name, src in info["sources"].items():
        epochs = "<1 pass" if src["epochs"] is None else f"{src['epochs']:.2f} passes"
        print(f"{name:8s} {src['tokens']:>14,} tokens  {src['documents']:>10,} documents  {epochs}")
    print(f"{info['rows']:,} rows x {info['seq_len']} = {info['tokens']:,} tokens, target share "
          f"{info['ratio_achieved']:.4f} (asked {info['ratio_requested']}), "
          f"{info['tokens_per_second']:,} tokens/s -> {out}")  # fmt: skip
