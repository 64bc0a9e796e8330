"""Tokenizer extension on tiny in-process tokenizers of both supported styles (seconds in all)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from langadapt.config import ExtendConfig
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import plan_extension

N_NEW = 150
STYLES = ["bytelevel", "metaspace", "sentencepiece", "llama3"]


def sentencepiece_like_tokenizer(out: Path, texts: list[str], like: Path) -> Path:
    """Llama-2 as converted from SentencePiece: trained on words (no token spans a space), served whole.

    The conftest Metaspace tokenizer is trained with split=False, so its tokens cross word boundaries;
    this one covers the other branch (units = words between ``▁`` boundaries). Special tokens and the
    chat template come from ``like`` (the conftest Metaspace tokenizer folder).
    """
    import shutil

    from tokenizers import models, pre_tokenizers, trainers

    shutil.copytree(like, out)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.model = models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=856, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.save(str(out / "tokenizer.json"))
    return out


def llama3_like_tokenizer(out: Path, like: Path) -> Path:
    """Byte-level with ``ignore_merges`` (Llama-3: a word found in the vocabulary is taken whole) and
    merges in the older "a b" string form."""
    import shutil

    shutil.copytree(like, out)
    data = json.loads((out / "tokenizer.json").read_text())
    data["model"]["ignore_merges"] = True
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, hu_texts, en_texts) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {"hu": tiny.write_jsonl(root / "hu.jsonl", hu_texts[:200]),
            "en": tiny.write_jsonl(root / "en.jsonl", en_texts[:200]),
            "en_heldout": tiny.write_jsonl(root / "en_heldout.jsonl", en_texts[200:]),
            "hu_heldout": tiny.write_jsonl(root / "hu_heldout.jsonl", tiny.demo_texts("hu", "valid", 50))}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, bytelevel_tok, metaspace_tok, en_texts) -> dict[str, Path]:
    sp = sentencepiece_like_tokenizer(tmp_path_factory.mktemp("sp") / "tok", en_texts, metaspace_tok)
    llama3 = llama3_like_tokenizer(tmp_path_factory.mktemp("l3") / "tok", bytelevel_tok)
    return {"bytelevel": bytelevel_tok, "metaspace": metaspace_tok, "sentencepiece": sp, "llama3": llama3}


@pytest.fixture(scope="module")
def extended(tmp_path_factory, bases, corpora) -> dict[str, tuple[Path, Path, dict]]:
    """style -> (base folder, extended folder, extension.json)."""
    result = {}
    for style, base in bases.items():
        out = tmp_path_factory.mktemp(f"ext_{style}") / "tok"
        cfg = ExtendConfig(base=str(base), corpus=[str(corpora["hu"])], english_corpus=[str(corpora["en"])],
                           english_heldout=[str(corpora["en_heldout"])],
                           target_heldout=[str(corpora["hu_heldout"])], num_new_tokens=N_NEW)  # fmt: skip
        tiny.run_stage("extend", cfg, out)
        record = tiny.read_json(out / "extension.json")
        result[style] = (base, out, record)
    return result


def _tok(folder: Path) -> Tokenizer:
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_units_split_at_words_only_without_cross_word_tokens(bases):
    assert load_base(bases["bytelevel"]).style == "byte-level"
    assert not load_base(bases["metaspace"]).split_words  # its tokens span spaces ("e▁", "s▁the")
    assert load_base(bases["sentencepiece"]).split_words


@pytest.mark.parametrize("style", STYLES)
def test_ids_and_merges_are_appended(extended, style):
    base, out, record = extended[style]
    old = json.loads((base / "tokenizer.json").read_text())
    new = json.loads((out / "tokenizer.json").read_text())
    assert record["added"] == N_NEW
    assert record["new_vocab_size"] == record["base_vocab_size"] + N_NEW
    for token, i in old["model"]["vocab"].items():
        assert new["model"]["vocab"][token] == i
    first = max(t["id"] for t in old["added_tokens"]) + 1
    first = max(first, max(old["model"]["vocab"].values()) + 1)
    new_ids = sorted(i for t, i in new["model"]["vocab"].items() if t not in old["model"]["vocab"])
    assert new_ids == list(range(first, first + N_NEW))
    old_merges = [m.split(" ") if isinstance(m, str) else m for m in old["model"]["merges"]]
    assert new["model"]["merges"][: len(old_merges)] == old_merges
    assert new["added_tokens"] == old["added_tokens"]
    assert len(record["added_tokens"]) == N_NEW
    assert {"DONE", "stage.json", "extension.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("style", STYLES)
def test_loads_with_transformers_and_keeps_specials(extended, style):
    from transformers import AutoTokenizer

    base, out, _ = extended[style]
    old, new = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    assert len(new) == len(old) + N_NEW
    assert (new.bos_token, new.eos_token, new.pad_token) == (old.bos_token, old.eos_token, old.pad_token)
    messages = [{"role": "user", "content": "Mi a helyzet?"}]
    chat = [t.apply_chat_template(messages, tokenize=False) for t in (old, new)]
    assert chat[0] == chat[1]
    text = tiny.demo_texts("hu", "valid", 3)[2]
    want = _tok(out).encode(text, add_special_tokens=False).ids
    assert new(text, add_special_tokens=False)["input_ids"] == want


@pytest.mark.parametrize("style", STYLES)
def test_english_ids_unchanged(extended, en_texts, style):
    base, out, record = extended[style]
    old, new = _tok(base), _tok(out)
    for text in en_texts[:200]:  # the reference corpus: guaranteed
        assert new.encode(text).ids == old.encode(text).ids
    assert record["fertility"]["english"]["before"] == record["fertility"]["english"]["after"]
    assert record["english_heldout_changed"]["docs"] == 100


@pytest.mark.parametrize("style", STYLES)
def test_every_added_token_is_reachable(extended, style):
    base, out, _ = extended[style]
    new = _tok(out)
    first = len(_tok(base).get_vocab())
    for token, i in new.get_vocab().items():
        if i >= first:
            assert [t.id for t in new.model.tokenize(token)] == [i], token


@pytest.mark.parametrize("style", STYLES)
def test_extension_lowers_hungarian_fertility(extended, style):
    record = extended[style][2]
    fert = record["fertility"]["target"]
    assert fert["after"]["tokens_per_word"] < 0.8 * fert["before"]["tokens_per_word"]
    heldout = record["fertility"]["target_heldout"]  # unseen text gains too
    assert heldout["after"]["tokens_per_word"] < 0.85 * heldout["before"]["tokens_per_word"]


def test_byte_fallback_characters_become_tokens(extended):
    _, out, record = extended["metaspace"]
    assert record["char_tokens"] > 0  # e.g. "ő", which the English-only base spells as <0xC5><0x91>
    assert record["fertility"]["target"]["before"]["byte_fallback_share"] > 0
    assert record["fertility"]["target"]["after"]["byte_fallback_share"] == 0
    assert not any(t.startswith("<0x") for t in _tok(out).get_vocab() if len(t) > 6)


_HU = "árvíztűrő tükörfúrógép ŐŰ"


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=80) | st.text(alphabet=_HU + " az és egy ,.\n", max_size=80))
def test_roundtrip(extended, style, text):
    base, out, _ = extended[style]
    old, new = _tok(base), _tok(out)
    got = new.decode(new.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
    want = old.decode(old.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
    assert got == want  # what the base round-trips (everything, for byte-level) the extension does too
    if style in ("bytelevel", "llama3"):
        assert got == text


def test_any_prefix_is_a_valid_extension(bases, hu_texts, en_texts):
    base = load_base(bases["metaspace"])
    ext = plan_extension(base, hu_texts[:100], num_new_tokens=60, english_texts=en_texts[:100])
    sizes = [len(ext.char_tokens) // 2, 30, 60]
    counts = [sum(len(e.ids) for e in ext.tokenizer(k).encode_batch(hu_texts[:20])) for k in sizes]
    for k in sizes:
        assert ext.tokenizer(k).get_vocab_size() == base.tokenizer().get_vocab_size() + k
    assert counts == sorted(counts, reverse=True)


def test_sentencepiece_model_file_is_dropped(tmp_path, bytelevel_tok, corpora, caplog):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(bytelevel_tok, base)
    (base / "tokenizer.model").write_bytes(b"\x00sentencepiece")
    cfg = ExtendConfig(base=str(base), corpus=[str(corpora["hu"])], num_new_tokens=20)
    tiny.run_stage("extend", cfg, tmp_path / "o")
    record = tiny.read_json(tmp_path / "o" / "extension.json")
    assert record["dropped_files"] == ["tokenizer.model"]
    assert not (tmp_path / "o" / "tokenizer.model").exists()
    assert "tokenizer.model" in caplog.text
