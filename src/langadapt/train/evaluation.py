"""Bits per byte on held-out target and English text during training (through :mod:`langadapt.eval.bpb`)."""

from __future__ import annotations

from typing import Any

from langadapt.config import PretrainConfig


def load_eval_texts(cfg: PretrainConfig) -> dict[str, list[str]]:
    """``{"target": [...], "english": [...]}`` for the corpora the config names (read once, up front)."""
    from langadapt.eval.bpb import read_heldout

    return read_heldout({"target": cfg.eval_target, "english": cfg.eval_english}, cfg.eval_max_docs,
                        cfg.text_field)


def evaluate(model: Any, tokenizer: Any, texts: dict[str, list[str]], *, bf16: bool,
             max_len: int) -> dict[str, float]:  # fmt: skip
    """``{"target_bpb": ..., "english_bpb": ...}`` (lower is better)."""
    from langadapt.eval.bpb import bpb_by_corpus

    scores = bpb_by_corpus(model, tokenizer, texts, batch_size=8, max_len=max_len, stride=max_len // 2, bf16=bf16)
    return {f"{name}_bpb": result["bpb"] for name, result in scores.items()}
