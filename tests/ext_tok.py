"""Extended tokenizers for the embedding tests: uses ``langadapt.tokenizer.extend`` when it exists, else
a small stand-in that trains a second BPE like the base and appends its tokens and merges.

The stand-in keeps every base id and puts new merges after the base's, the same contract ``extend``
has; it is only for tests (no English-reference check, no special handling of SentencePiece files).
"""

from __future__ import annotations

import json
from pathlib import Path


def extend_tokenizer(base_dir: Path, texts: list[str], out: Path, num_new: int,
                     english: list[Path] | None = None) -> Path:  # fmt: skip
    """A tokenizer folder that extends the one in ``base_dir`` with up to ``num_new`` tokens
    (``english``: reference corpora whose tokenization must not change; real ``extend`` only)."""
    try:
        from langadapt.tokenizer.extend import extend
    except ImportError:
        return _standin_extend(base_dir, texts, out, num_new)
    from tiny import write_jsonl

    from langadapt.config import ExtendConfig

    corpus = write_jsonl(out.parent / f"{out.name}-corpus.jsonl", texts)
    extend(ExtendConfig(base=str(base_dir), corpus=[str(corpus)], num_new_tokens=num_new,
                        english_corpus=[str(p) for p in english or []]), out)  # fmt: skip
    return out


def _standin_extend(base_dir: Path, texts: list[str], out: Path, num_new: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    spec = json.loads((base_dir / "tokenizer.json").read_text(encoding="utf-8"))
    base_vocab: dict[str, int] = spec["model"]["vocab"]
    byte_level = "ByteLevel" in json.dumps(spec["pre_tokenizer"])
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = Tokenizer.from_str(json.dumps(spec)).pre_tokenizer
    trainer_tok.normalizer = Tokenizer.from_str(json.dumps(spec)).normalizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=len(base_vocab) + 4 * num_new, initial_alphabet=alphabet,
                                  show_progress=False)  # fmt: skip
    trainer_tok.train_from_iterator(texts, trainer)
    merges = json.loads(trainer_tok.to_str())["model"]["merges"]

    as_lists = isinstance(spec["model"]["merges"][0], list)
    next_id = max(max(base_vocab.values()), *(t["id"] for t in spec["added_tokens"])) + 1
    known = set(base_vocab)
    added = 0
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        merged = left + right
        if merged in known or left not in known or right not in known:
            continue
        base_vocab[merged] = next_id
        spec["model"]["merges"].append([left, right] if as_lists else f"{left} {right}")
        known.add(merged)
        next_id += 1
        added += 1
        if added == num_new:
            break
    out.mkdir(parents=True, exist_ok=True)
    base = AutoTokenizer.from_pretrained(base_dir)
    base.save_pretrained(out)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (out / "extension.json").write_text(json.dumps({"base_vocab_size": len(base), "num_new_tokens": added}))
    return out
