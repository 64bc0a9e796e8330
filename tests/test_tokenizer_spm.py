"""tokenizer.model of an extended SentencePiece-style tokenizer (langadapt.tokenizer.spm), on real files.

The bases are Mistral v1 / v3 as shipped in the mistral-common wheel (tokenizer.model) with the
tokenizer.json transformers converts from them (tests/real_tokenizers.py; skipped when unavailable).
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")

import sentencepiece as spm
from real_tokenizers import real_tokenizer
from tokenizers import Tokenizer

from langadapt.errors import UserError
from langadapt.tokenizer import spm as lspm
from langadapt.tokenizer.base import load_base
from langadapt.tokenizer.extend import plan_extension, save_tokenizer_folder

NEW = 300


@pytest.fixture(scope="module", params=["mistral-v3", "mistral-v1"])
def extended(request, tmp_path_factory, hu_texts, en_texts):
    """(base folder, extended folder, Extension) for +NEW tokens learned on Hungarian, English reference on."""
    base_dir = real_tokenizer(request.param)
    base = load_base(base_dir)
    ext = plan_extension(base, hu_texts, num_new_tokens=NEW, english_texts=en_texts)
    out = tmp_path_factory.mktemp(f"ext-{request.param}")
    dropped = save_tokenizer_folder(base, ext.tokenizer_json(), out)
    assert "tokenizer.model" not in dropped
    return base_dir, out, ext


def _ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_extended_model_encodes_like_tokenizer_json(extended, hu_texts, en_texts):
    _, out, ext = extended
    assert (out / "tokenizer.model").is_file()
    assert ext.added == NEW
    texts = hu_texts + en_texts + ["  leading spaces, tabs\tand ő ű Ű ⁿ 12345", "x-msdownload intranet,"]
    assert lspm.sentencepiece_mismatches(out, texts) == []
    # and the extension does shorten Hungarian, in both formats
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    base_sp = spm.SentencePieceProcessor(model_file=str(extended[0] / "tokenizer.model"))
    assert sum(map(len, sp.encode(hu_texts[:50]))) < 0.9 * sum(map(len, base_sp.encode(hu_texts[:50])))


def test_new_pieces_have_their_tokenizer_json_ids_and_base_pieces_are_unchanged(extended):
    base_dir, out, ext = extended
    base = lspm.read_model(base_dir / "tokenizer.model")
    model = lspm.read_model(out / "tokenizer.model")
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    n = len(base.pieces)
    assert len(model.pieces) == n + NEW == len(vocab)
    for old, new in zip(base.pieces, model.pieces):
        assert (old.piece, old.score, old.type) == (new.piece, new.score, new.type)
    added = model.pieces[n:]
    assert [p.piece for p in added] == ext.new_tokens()
    assert all(vocab[p.piece] == n + k for k, p in enumerate(added))
    assert all(p.type == lspm.NORMAL for p in added)
    scores = [p.score for p in added]
    assert max(scores) < min(p.score for p in base.pieces)
    assert all(a > b for a, b in itertools.pairwise(scores))  # strictly decreasing: merge order, no ties
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert all(sp.piece_to_id(p.piece) == vocab[p.piece] for p in added)


def test_english_reference_unchanged_and_new_pieces_follow_the_trainer_rules(extended, en_texts):
    base_dir, out, ext = extended
    old, new = Tokenizer.from_file(str(base_dir / "tokenizer.json")), Tokenizer.from_file(str(out / "tokenizer.json"))
    assert _ids(old, en_texts) == _ids(new, en_texts)
    spec = lspm.read_model(base_dir / "tokenizer.model").trainer_spec
    assert all(lspm.valid_piece(t, spec) for t in ext.new_tokens())


def test_every_split_of_a_new_piece_is_a_merge(extended):
    base_dir, out, _ = extended
    data = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    base_merges = json.loads((base_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    merges = [tuple(m) for m in data["model"]["merges"]]
    assert merges[: len(base_merges)] == [tuple(m) for m in base_merges]  # appended after the base's
    vocab = data["model"]["vocab"]
    normal = {p.piece for p in lspm.read_model(out / "tokenizer.model").pieces if p.type == lspm.NORMAL}
    first_new = len(lspm.read_model(base_dir / "tokenizer.model").pieces)
    have = set(merges)
    for token, i in vocab.items():
        if i >= first_new:
            splits = {(token[:k], token[k:]) for k in range(1, len(token))}
            assert {s for s in splits if s[0] in normal and s[1] in normal} <= have, token


def test_slow_tokenizer_from_tokenizer_model_sees_the_new_tokens(extended, hu_texts, tmp_path):
    from transformers import LlamaTokenizer

    _, out, ext = extended
    only = tmp_path / "only-model"
    only.mkdir()
    shutil.copy(out / "tokenizer.model", only / "tokenizer.model")
    slow = LlamaTokenizer.from_pretrained(str(only))
    fast = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert len(slow) == fast.get_vocab_size(with_added_tokens=True)
    assert slow.convert_tokens_to_ids(ext.new_tokens()[-1]) == fast.token_to_id(ext.new_tokens()[-1])
    texts = hu_texts[:30]
    assert [slow.encode(t, add_special_tokens=False) for t in texts] == _ids(fast, texts)


def test_valid_piece_follows_sentencepiece_trainer():
    spec = lspm._pb2().TrainerSpec(split_digits=True, allow_whitespace_only_pieces=True)
    ok = ["▁szöveg", "ítás", "▁", "▁▁", "),", "日本語", "カタカナ漢字"]
    bad = ["et,", "-m", "a▁", "a▁b", "12", "a1", "x" * 17, "▁▁a", "ab c"]
    assert [lspm.valid_piece(p, spec) for p in ok] == [True] * len(ok)
    assert [lspm.valid_piece(p, spec) for p in bad] == [False] * len(bad)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def test_model_of_another_vocabulary_is_a_user_error(tmp_path, hu_texts):
    folder = _copy(real_tokenizer("mistral-v3"), tmp_path / "base")
    shutil.copy(real_tokenizer("mistral-v1") / "tokenizer.model", folder / "tokenizer.model")  # 32000 pieces
    with pytest.raises(UserError) as err:
        plan_extension(load_base(folder), hu_texts[:20], num_new_tokens=10)
    msg = str(err.value)
    assert msg.startswith(str(folder / "tokenizer.model")) and "\n" not in msg and "32000" in msg


def test_disagreeing_model_is_detected(tmp_path, en_texts):
    folder = _copy(real_tokenizer("mistral-v3"), tmp_path / "base")
    assert lspm.sentencepiece_mismatches(folder, en_texts) == []
    proto = lspm.read_model(folder / "tokenizer.model")
    the = next(p for p in proto.pieces if p.piece == "▁the")
    the.type = lspm.UNUSED  # same pieces and ids, but SentencePiece no longer emits "▁the"
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    assert lspm.sentencepiece_mismatches(folder, ["the cat and the dog"])
    with pytest.raises(UserError) as err:
        lspm.check_agreement(folder, en_texts[:20])
    msg = str(err.value)
    assert msg.startswith(str(folder / "tokenizer.model")) and "\n" not in msg


def test_stage_writes_tokenizer_model(tmp_path, hu_texts, en_corpus):
    from ext_tok import extend_tokenizer

    out = extend_tokenizer(real_tokenizer("mistral-v3"), hu_texts[:150], tmp_path / "ext", 100, english=[en_corpus])
    record = json.loads((out / "extension.json").read_text(encoding="utf-8"))
    assert record["dropped_files"] == []
    assert (out / "tokenizer.model").is_file()
    assert record["verification"]["tokenizer_model_mismatches"] == 0
    assert lspm.read_model(out / "tokenizer.model").pieces[-1].piece == record["added_tokens"][-1].replace(" ", "▁")
