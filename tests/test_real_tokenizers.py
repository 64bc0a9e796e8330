"""The real-tokenizer fixtures themselves (tests/real_tokenizers.py): each converted tokenizer.json must tokenize
exactly like the family's original library, keep the original special-token ids, and round-trip text."""

from __future__ import annotations

import json
from functools import cache

import pytest
import real_tokenizers as rt

EXPECTED = {  # name: (len incl. added tokens, {special token: original id})
    "llama3": (128256, {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009,
                        "<|reserved_special_token_200|>": 128210, "<|reserved_special_token_245|>": 128255}),
    "llama4": (202048, {"<|begin_of_text|>": 200000, "<|eot|>": 200008, "<|reserved_special_token_0|>": 201144}),
    "qwen2": (151646, {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}),
    "qwen35": (151646, {"<|endoftext|>": 151643, "<|im_end|>": 151645}),
    "gpt2": (50257, {"<|endoftext|>": 50256}),
    "tekken": (131072, {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "<SPECIAL_999>": 999}),
    "phi3": (32064, {"<s>": 1, "<|endoftext|>": 32000, "<|user|>": 32010}),
    "llama2": (32000, {"<unk>": 0, "<s>": 1, "</s>": 2}),
    "mistral-v1": (32000, {"<unk>": 0, "<s>": 1, "</s>": 2}),
    "mistral-v3": (32768, {"<s>": 1, "[INST]": 3, "[/INST]": 4}),
    "gemma": (262144, {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<|turn>": 105}),
    "xlmr": (250002, {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}),
}  # fmt: skip
WITH_REFERENCE = ["llama3", "llama4", "tekken", "mistral-v1", "mistral-v3"]
GGUF_MADE = [n for n, f in rt.FAMILIES.items() if f.package == "llama-cpp-python"]


@cache
def _tok(name: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(rt.real_tokenizer(name) / "tokenizer.json"))


@pytest.fixture(scope="module")
def sample(hu_texts, en_texts) -> list[str]:
    return hu_texts[:100] + en_texts[:100]


def _ids(name: str, text: str) -> list[int]:
    return _tok(name).encode(text, add_special_tokens=False).ids


def test_names_and_styles():
    assert set(rt.ALL_NAMES) == set(EXPECTED)
    assert set(rt.BYTE_LEVEL) == {"llama3", "llama4", "qwen2", "qwen35", "gpt2", "tekken"}
    assert set(rt.SENTENCEPIECE) == {"phi3", "llama2", "mistral-v1", "mistral-v3", "gemma"}
    assert rt.WITH_MODEL_FILE == ("mistral-v1", "mistral-v3")
    assert [p.values[0] for p in rt.params("sentencepiece", model_file=True)] == ["mistral-v1", "mistral-v3"]


@pytest.mark.parametrize("name", rt.params())
def test_folder(name):
    folder = rt.real_tokenizer(name)
    assert (folder / "tokenizer_config.json").is_file() and (folder / "special_tokens_map.json").is_file()
    assert (folder / "tokenizer.model").is_file() == (name in rt.WITH_MODEL_FILE)
    size, specials = EXPECTED[name]
    tok = _tok(name)
    assert tok.get_vocab_size(with_added_tokens=True) == size
    assert {t: tok.token_to_id(t) for t in specials} == specials
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    assert model["type"] == ("Unigram" if name in rt.UNIGRAM else "BPE")
    if name in rt.SENTENCEPIECE:
        assert model["byte_fallback"] is True
    if name in ("llama3", "llama4", "tekken"):
        assert model["ignore_merges"] is True


@pytest.mark.parametrize("name", rt.params(names=WITH_REFERENCE + ["gpt2", "phi3", "llama2"]))
def test_special_tokens_keep_original_ids(name):
    vocab = _tok(name).get_vocab(with_added_tokens=True)
    original = rt.reference_special_ids(name)
    assert original
    assert {t: vocab.get(t) for t in original} == original


@pytest.mark.parametrize("name", rt.params(names=WITH_REFERENCE))
def test_same_ids_as_original_library(name, sample):
    encode = rt.reference_encoder(name)
    edge = sorted({t for n in ("llama2", "qwen35", "gemma") for t, _ in rt.reference_cases(n)})
    mismatched = [t[:60] for t in sample + edge if _ids(name, t) != encode(t)]
    assert not mismatched, f"{len(mismatched)} texts tokenized differently, e.g. {mismatched[:3]}"


@pytest.mark.parametrize("name", rt.params(names=[n for n in GGUF_MADE if n != "xlmr"]))
def test_same_ids_as_llama_cpp_references(name):
    cases = rt.reference_cases(name)
    assert len(cases) >= 40
    mismatched = [(t[:40], ids[:8], _ids(name, t)[:8]) for t, ids in cases if _ids(name, t) != ids]
    assert not mismatched


def test_gguf_made_folders_were_checked_against_the_gguf():
    """The GGUF conversions check every piece's id against the file when they run (see _convert_gguf)."""
    for name in GGUF_MADE:
        info = json.loads((rt.real_tokenizer(name) / "fixture.json").read_text(encoding="utf-8"))
        assert f"all {EXPECTED[name][0]} GGUF pieces at their ids" in info["workaround"]


@pytest.mark.parametrize("name", rt.params("byte-level") + rt.params("sentencepiece"))
def test_decode_encode_roundtrip(name, sample):
    tok = _tok(name)
    bad = [t[:60] for t in sample if tok.decode(_ids(name, t), skip_special_tokens=False) != t]
    assert not bad


@pytest.mark.parametrize("name", rt.params(names=["llama3", "qwen2", "mistral-v3", "phi3"]))
def test_autotokenizer_loads_the_folder(name, sample):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(rt.real_tokenizer(name))
    assert len(hf) == EXPECTED[name][0]
    for text in sample[:20] + sample[-20:]:
        assert hf(text, add_special_tokens=False)["input_ids"] == _ids(name, text)
