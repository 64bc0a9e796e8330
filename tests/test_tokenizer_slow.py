"""The issue's acceptance check on the real SmolLM2-135M tokenizer and the shared Hungarian split."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import tiny
from tokenizers import Tokenizer

from langadapt.config import ExtendConfig
from langadapt.corpus.readers import iter_documents
from langadapt.models import resolve_tokenizer
from langadapt.tokenizer.metrics import fertility

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
DEMO = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data"


def split(lang: str, name: str) -> str:
    shared = CORPORA / lang / f"{name}.jsonl.gz"
    return str(shared if shared.exists() else DEMO / f"{lang}-{name}.jsonl.gz")  # same files, packaged


@pytest.mark.slow
def test_smollm2_hungarian_8000(tmp_path):
    base = Tokenizer.from_file(str(resolve_tokenizer("smollm2-135m") / "tokenizer.json"))  # convert first
    start = time.perf_counter()
    record = tiny.run_stage("extend", ExtendConfig(base="smollm2-135m", corpus=[split("hu", "train")],
                                                   english_corpus=[split("en", "train")], num_new_tokens=8000),
                            tmp_path / "tok")  # fmt: skip
    seconds = time.perf_counter() - start
    new = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert record["added"] == 8000 and seconds < 60

    valid = list(iter_documents([split("hu", "valid")]))
    before, after = fertility(base, valid)["tokens_per_word"], fertility(new, valid)["tokens_per_word"]
    assert after <= 0.5 * before, (before, after)

    english = list(iter_documents([split("en", "valid")]))
    old_ids = [e.ids for e in base.encode_batch(english, add_special_tokens=False)]
    new_ids = [e.ids for e in new.encode_batch(english, add_special_tokens=False)]
    assert old_ids == new_ids
