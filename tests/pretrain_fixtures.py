"""Small packed folders in the ``langadapt-packed-v1`` format (see langadapt.data.pack), written directly.

The pretrain tests need a few rows with known document boundaries fast; ``data pack`` (worker processes,
mixing) is tested in its own module. The format is the reader's: raw uint32 token ids, uint16 position
ids that restart at 0 at every segment, pack.json with the tokenizer fingerprint, DONE.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pack_rows(docs: list[list[int]], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents into rows of ``seq_len``; a document cut by a row end restarts at 0."""
    ids, pos = [], []
    for doc in docs:
        ids.extend(doc)
        pos.extend(range(len(doc)))
    rows = len(ids) // seq_len
    ids_arr = np.asarray(ids[: rows * seq_len], dtype=np.uint32).reshape(rows, seq_len)
    pos_arr = np.asarray(pos[: rows * seq_len], dtype=np.int64).reshape(rows, seq_len)
    # a continuation at the start of a row is a new segment: positions from 0 again
    for r in range(rows):
        first = pos_arr[r, 0]
        if first:
            k = np.argmax(pos_arr[r] == 0) if (pos_arr[r] == 0).any() else seq_len
            pos_arr[r, :k] -= first
    return ids_arr, pos_arr.astype(np.uint16)


def write_packed(out: Path, tokenizer_dir: Path, texts: list[str], seq_len: int) -> Path:
    """Encode ``texts`` (+ EOS each) with the tokenizer and write a packed folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    docs = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    ids, pos = pack_rows(docs, seq_len)
    return write_arrays(out, tokenizer_dir, ids, pos)


def write_arrays(out: Path, tokenizer_dir: Path, ids: np.ndarray, pos: np.ndarray) -> Path:
    """A packed folder from ready (rows, seq_len) arrays."""
    from langadapt.data.reader import FORMAT, INPUT_IDS, PACK_JSON, POSITION_IDS
    from langadapt.data.tokens import tokenizer_fingerprint

    seq_len = int(ids.shape[1])
    out.mkdir(parents=True, exist_ok=True)
    ids.astype(np.uint32).tofile(out / INPUT_IDS)
    pos.astype(np.uint16).tofile(out / POSITION_IDS)
    info = {
        "format": FORMAT, "rows": int(ids.shape[0]), "seq_len": seq_len,
        "files": {INPUT_IDS: {"dtype": "uint32"}, POSITION_IDS: {"dtype": "uint16"}},
        "tokenizer": {"fingerprint": tokenizer_fingerprint(Path(tokenizer_dir)), "path": str(tokenizer_dir)},
    }  # fmt: skip
    (out / PACK_JSON).write_text(json.dumps(info))
    (out / "DONE").write_text("")
    return out
