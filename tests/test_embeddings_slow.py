"""The real SmolLM2-135M extended with 8,000 Hungarian tokens (the demo's settings): init and distil help.

Slow (minutes on 2 CPU cores): ``pytest -m slow tests/test_embeddings_slow.py``. Evaluates on the first
``DOCS`` validation documents of each language to keep the run short.
"""

from __future__ import annotations

from pathlib import Path

import ext_tok
import pytest

from langadapt.config import DistillConfig, InitConfig
from langadapt.corpus.readers import iter_documents
from langadapt.runtime import bf16_is_faster
from langadapt.scoring import bpb_of_model

pytestmark = pytest.mark.slow
CORPORA = Path("/work/shared/corpora")
DEMO = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data"
DOCS = 16


def _corpus(lang: str, split: str) -> Path:
    shared = CORPORA / lang / f"{split}.jsonl.gz"
    return shared if shared.exists() else DEMO / f"{lang}-{split}.jsonl.gz"


def _bpb(folder, lang: str) -> float:
    from langadapt.models import load_model, load_tokenizer

    texts = list(iter_documents([_corpus(lang, "valid")], max_docs=DOCS))
    model, tok = load_model(folder), load_tokenizer(folder)
    return bpb_of_model(model, tok, texts, max_len=512, stride=256, bf16=bf16_is_faster())["bpb"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from langadapt.embeddings.init import init_embeddings
    from langadapt.models import resolve_model

    work = tmp_path_factory.mktemp("smollm2_hu")
    texts = list(iter_documents([_corpus("hu", "train")]))
    tok = ext_tok.extend_tokenizer(resolve_model("smollm2-135m"), texts, work / "tokenizer", 8000,
                                   english=[_corpus("en", "train")])  # fmt: skip
    init_embeddings(InitConfig(model="smollm2-135m", tokenizer=str(tok),
                               kl_corpus=[str(_corpus("en", "valid"))]), work / "init")  # fmt: skip
    return work


def test_mean_subword_init_helps_hungarian_and_keeps_english(real):
    base_hu, base_en = _bpb("smollm2-135m", "hu"), _bpb("smollm2-135m", "en")
    init_hu, init_en = _bpb(real / "init", "hu"), _bpb(real / "init", "en")
    assert init_hu < base_hu
    assert init_en <= base_en * 1.01


def test_distillation_lowers_hungarian_bpb(real):
    from langadapt.runs import run_stage
    from langadapt.stages import BY_NAME

    cfg = DistillConfig(model=str(real / "init"), teacher="smollm2-135m",
                        corpus=[str(_corpus("hu", "train"))], steps=30, calibrate_steps=15)  # fmt: skip
    result = run_stage(BY_NAME["distill"], cfg, real / "distill")
    assert result["frozen_rows_unchanged"] is True
    assert result["loss"]["distill"]["last"] < result["loss"]["distill"]["first"]
    assert _bpb(real / "distill", "hu") < _bpb(real / "init", "hu")
