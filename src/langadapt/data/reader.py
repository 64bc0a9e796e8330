"""Read a packed folder written by ``langadapt data pack`` (format: see :mod:`langadapt.data.pack`).

Only numpy is needed here, so a training loop (or a DataLoader worker) imports this without pulling in
the packer. Rows are memory-mapped: opening a 100 GB dataset costs nothing and a row read touches only
that row's pages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from langadapt.data.tokens import tokenizer_fingerprint
from langadapt.errors import UserError
from langadapt.models import resolve_tokenizer
from langadapt.runs import is_done

FORMAT = "langadapt-packed-v1"
PACK_JSON = "pack.json"
INPUT_IDS = "input_ids.bin"
POSITION_IDS = "position_ids.bin"


def load_pack_info(folder: str | Path) -> dict[str, Any]:
    """The folder's pack.json, after checking it is a finished packed folder of this format."""
    folder = Path(folder)
    info_path = folder / PACK_JSON
    if not folder.is_dir():
        raise UserError("packed data folder not found", folder)
    if not is_done(folder) or not info_path.exists():
        raise UserError("not a finished packed data folder (no DONE / pack.json; run `data pack`)", folder)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"pack.json is not valid JSON ({exc})", info_path) from exc
    if info.get("format") != FORMAT:
        raise UserError(f"unknown packed format {info.get('format')!r} (expected {FORMAT})", info_path)
    return info


class PackedDataset:
    """Rows of exactly ``seq_len`` tokens; ``ds[i]`` -> ``{"input_ids", "position_ids"}`` (int64).

    ``position_ids`` restart at 0 where a document (or the continuation of a document cut at the end of
    the previous row) starts; that is the document boundary for attention masking and for labels (the
    first token of a segment must not be predicted from the token before it).
    Works as a map-style ``torch.utils.data.Dataset`` (numpy arrays collate to tensors).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.info = load_pack_info(self.folder)
        self.seq_len: int = int(self.info["seq_len"])
        self.rows: int = int(self.info["rows"])
        self.input_ids = self._open(INPUT_IDS)
        self.position_ids = self._open(POSITION_IDS)

    def _open(self, name: str) -> np.memmap:
        spec = self.info["files"][name]
        path = self.folder / name
        expected = self.rows * self.seq_len * np.dtype(spec["dtype"]).itemsize
        if not path.exists() or path.stat().st_size != expected:
            raise UserError(f"packed file is missing or has the wrong size (expected {expected} bytes)", path)
        return np.memmap(path, dtype=spec["dtype"], mode="r", shape=(self.rows, self.seq_len))

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its data; DataLoader workers started with spawn reopen the files instead.
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -self.rows <= i < self.rows:
            raise IndexError(i)
        return {
            "input_ids": self.input_ids[i].astype(np.int64),
            "position_ids": self.position_ids[i].astype(np.int64),
        }

    def batch(self, indices: np.ndarray | list[int]) -> dict[str, np.ndarray]:
        """Several rows at once, shape (len(indices), seq_len), int64 (one fancy-indexed read)."""
        idx = np.asarray(indices, dtype=np.int64)
        return {
            "input_ids": self.input_ids[idx].astype(np.int64),
            "position_ids": self.position_ids[idx].astype(np.int64),
        }


def segment_lengths(position_ids: np.ndarray) -> np.ndarray:
    """Lengths of the segments of one row (what flash-attention varlen's ``cu_seqlens`` is built from)."""
    starts = np.flatnonzero(np.asarray(position_ids) == 0)
    return np.diff(np.append(starts, len(position_ids)))


def check_tokenizer(folder: str | Path, tokenizer: str | Path) -> None:
    """UserError unless ``folder`` was packed with the same tokenizer (by content fingerprint)."""
    info = load_pack_info(folder)
    tok_dir = resolve_tokenizer(tokenizer)
    packed_with = info["tokenizer"]["fingerprint"]
    if tokenizer_fingerprint(tok_dir) != packed_with:
        raise UserError(
            f"packed with another tokenizer ({info['tokenizer'].get('path')}, fingerprint "
            f"{packed_with[:12]}) than {tok_dir}; pack again with this model's tokenizer",
            folder,
        )
