"""Extended tokenizers for the embedding tests, made with the real ``tokenizer extend``."""

from __future__ import annotations

from pathlib import Path

from tiny import write_jsonl

from langadapt.config import ExtendConfig


def extend_tokenizer(base_dir: Path, texts: list[str], out: Path, num_new: int,
                     english: list[Path] | None = None) -> Path:  # fmt: skip
    """A tokenizer folder that extends the one in ``base_dir`` with up to ``num_new`` tokens
    (``english``: reference corpora whose tokenization must not change)."""
    corpus = write_jsonl(out.parent / f"{out.name}-corpus.jsonl", texts)
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    cfg = ExtendConfig(base=str(base_dir), corpus=[str(corpus)], num_new_tokens=num_new,
                       english_corpus=[str(p) for p in english or []])  # fmt: skip
    run_stage(BY_NAME["extend"], cfg, out)
    return out
