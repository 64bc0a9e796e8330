from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny


@pytest.fixture(scope="session")
def hu_texts() -> list[str]:
    return tiny.demo_texts("hu", n=300)


@pytest.fixture(scope="session")
def en_texts() -> list[str]:
    return tiny.demo_texts("en", n=300)


@pytest.fixture(scope="session")
def bytelevel_tok(tmp_path_factory, en_texts) -> Path:
    """A byte-level BPE trained on English only, so Hungarian needs new tokens."""
    return tiny.bytelevel_tokenizer(tmp_path_factory.mktemp("bl_tok"), en_texts)


@pytest.fixture(scope="session")
def metaspace_tok(tmp_path_factory, en_texts) -> Path:
    return tiny.metaspace_tokenizer(tmp_path_factory.mktemp("ms_tok"), en_texts)


@pytest.fixture(scope="session")
def tiny_tied(tmp_path_factory, bytelevel_tok) -> Path:
    return tiny.tiny_model(tmp_path_factory.mktemp("tiny_tied"), bytelevel_tok, tied=True)


@pytest.fixture(scope="session")
def tiny_untied_padded(tmp_path_factory, bytelevel_tok) -> Path:
    return tiny.tiny_model(tmp_path_factory.mktemp("tiny_untied"), bytelevel_tok, tied=False, extra_rows=13)


@pytest.fixture()
def hu_corpus(tmp_path, hu_texts) -> Path:
    return tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts)


@pytest.fixture()
def en_corpus(tmp_path, en_texts) -> Path:
    return tiny.write_jsonl(tmp_path / "en.jsonl", en_texts)


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is faster and avoids spin-waiting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
