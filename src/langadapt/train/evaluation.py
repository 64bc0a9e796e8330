"""Bits per byte on held-out target and English text during training (through :mod:`langadapt.scoring`)."""

from __future__ import annotations

from typing import Any, Protocol

from langadapt.corpus.readers import read_heldout
from langadapt.scoring import bpb_by_corpus


class HeldOut(Protocol):
    """What training's evaluation reads of its config (``PretrainConfig`` and ``AlignConfig`` both have it)."""

    eval_target: list[str]
    eval_english: list[str]
    eval_max_docs: int
    text_field: str


def load_eval_texts(cfg: HeldOut) -> dict[str, list[str]]:
    """``{"target": [...], "english": [...]}`` for the corpora the config names (read once, up front)."""
    return read_heldout({"target": cfg.eval_target, "english": cfg.eval_english}, cfg.eval_max_docs,
                        cfg.text_field)


def evaluate(model: Any, tokenizer: Any, texts: dict[str, list[str]], *, bf16: bool,
             max_len: int) -> dict[str, float]:  # fmt: skip
    """``{"target_bpb": ..., "english_bpb": ...}`` (lower is better)."""
    scores = bpb_by_corpus(model, tokenizer, texts, batch_size=8, max_len=max_len, stride=max_len // 2, bf16=bf16)
    return {f"{name}_bpb": result["bpb"] for name, result in scores.items()}
