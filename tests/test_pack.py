"""data pack: exact mixing, rows of seq_len, per-segment position ids, EOS, determinism, repeats, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny
from tokenizers import Tokenizer

from langadapt.cli import main
from langadapt.config import PackConfig
from langadapt.data.pack import PackedDataset, check_tokenizer, segment_lengths
from langadapt.errors import UserError

SEQ = 64


def run_pack(out: Path, tok: Path, target: Path, english: Path, **kw) -> dict:
    cfg = PackConfig(tokenizer=str(tok), target=[str(target)], english=[str(english)], seq_len=SEQ,
                     tokens=kw.pop("tokens", 20_000), workers=kw.pop("workers", 1), **kw)  # fmt: skip
    tiny.run_stage("pack", cfg, out)
    return tiny.read_json(out / "pack.json")


def documents(folder: Path, eos_id: int) -> list[np.ndarray]:
    """The document stream: all rows end to end, cut after every EOS (the last one may be cut short)."""
    flat = PackedDataset(folder).batch(range(len(PackedDataset(folder))))["input_ids"].ravel()
    cuts = np.flatnonzero(flat == eos_id) + 1
    return [d for d in np.split(flat, cuts) if len(d)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, bytelevel_tok, hu_texts, en_texts) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("packed")
    hu = tiny.write_jsonl(base / "hu.jsonl", hu_texts)
    en = tiny.write_jsonl(base / "en.jsonl", en_texts)
    info = run_pack(base / "out", bytelevel_tok, hu, en, ratio=0.75, shuffle_buffer=50)
    return base / "out", info


def test_rows_are_exactly_seq_len(packed):
    folder, info = packed
    ds = PackedDataset(folder)
    assert info["rows"] == len(ds) == -(-20_000 // SEQ)
    assert info["tokens"] == len(ds) * SEQ
    assert (folder / "input_ids.bin").stat().st_size == len(ds) * SEQ * 4
    assert ds[0]["input_ids"].shape == ds[len(ds) - 1]["position_ids"].shape == (SEQ,)
    assert ds[0]["input_ids"].dtype == np.int64
    assert (folder / "DONE").exists() and (folder / "stage.json").exists()


def test_position_ids_restart_at_each_document_and_row(packed):
    folder, info = packed
    eos = info["tokenizer"]["eos_id"]
    ds = PackedDataset(folder)
    rows = ds.batch(range(len(ds)))
    expected = np.zeros_like(rows["position_ids"])
    for r, ids in enumerate(rows["input_ids"]):
        for j in range(1, SEQ):  # 0 at a row start (a continued document starts a new segment) and after EOS
            expected[r, j] = 0 if ids[j - 1] == eos else expected[r, j - 1] + 1
    assert np.array_equal(rows["position_ids"], expected)
    assert segment_lengths(rows["position_ids"][0]).sum() == SEQ
    # Some document really does continue across a row boundary.
    assert any(ids[-1] != eos for ids in rows["input_ids"][:-1])
    assert info["segments"] == int((rows["position_ids"] == 0).sum())


def test_every_document_ends_with_eos_and_round_trips(packed, bytelevel_tok, hu_texts, en_texts):
    folder, info = packed
    tok = Tokenizer.from_file(str(bytelevel_tok / "tokenizer.json"))
    eos = info["tokenizer"]["eos_id"]
    assert info["tokenizer"]["bos"] is None  # the tiny byte-level tokenizer adds none
    docs = documents(folder, eos)
    assert info["truncated_last_document"] == (docs[-1][-1] != eos)
    hu, en = set(hu_texts), set(en_texts)
    target_tokens = 0
    for doc in docs[:-1]:
        assert doc[-1] == eos
        text = tok.decode(doc[:-1].tolist(), skip_special_tokens=False)
        assert text in hu or text in en
        target_tokens += len(doc) if text in hu else 0
    # The last document may be cut anywhere, even inside a UTF-8 character: compare its tokens.
    last = docs[-1].tolist()
    encoded = {t: tok.encode(t, add_special_tokens=False).ids + [eos] for t in hu | en}
    assert any(ids[: len(last)] == last for ids in encoded.values())
    target_tokens += len(last) if any(encoded[t][: len(last)] == last for t in hu) else 0
    assert target_tokens == info["sources"]["target"]["tokens"]


def test_ratio_is_exact_within_one_document(packed, bytelevel_tok, hu_texts, en_texts):
    _, info = packed
    tok = Tokenizer.from_file(str(bytelevel_tok / "tokenizer.json"))
    longest = max(len(e.ids) + 1 for e in tok.encode_batch(hu_texts + en_texts, add_special_tokens=False))
    target = info["sources"]["target"]["tokens"]
    assert target + info["sources"]["english"]["tokens"] == info["tokens"]
    assert abs(target - 0.75 * info["tokens"]) <= longest
    assert info["ratio_achieved"] == pytest.approx(target / info["tokens"])


def test_deterministic_for_a_seed_and_workers(tmp_path, packed, bytelevel_tok, hu_corpus, en_corpus):
    first, _ = packed
    again = run_pack(tmp_path / "again", bytelevel_tok, hu_corpus, en_corpus, ratio=0.75, shuffle_buffer=50,
                     workers=2)  # fmt: skip
    assert again["rows"] > 0
    for name in ("input_ids.bin", "position_ids.bin"):
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    run_pack(tmp_path / "seed1", bytelevel_tok, hu_corpus, en_corpus, ratio=0.75, shuffle_buffer=50, seed=1)
    assert (first / "input_ids.bin").read_bytes() != (tmp_path / "seed1" / "input_ids.bin").read_bytes()


def test_source_that_runs_out_repeats_up_to_the_limit(tmp_path, bytelevel_tok, hu_texts, en_texts):
    small = tiny.write_jsonl(tmp_path / "small.jsonl", hu_texts[1:4])  # ~160 tokens a pass
    # Short English documents keep the mix close to 50/50 at every step, so the target needs ~3 passes.
    en_corpus = tiny.write_jsonl(tmp_path / "en.jsonl", [t for t in en_texts if len(t) < 200])
    info = run_pack(tmp_path / "ok", bytelevel_tok, small, en_corpus, ratio=0.5, tokens=1000, max_epochs=4)
    target = info["sources"]["target"]
    assert target["epochs_started"] >= 3 and 2.5 < target["epochs"] <= 4
    assert target["epochs"] == pytest.approx(target["tokens"] / target["pass_tokens"], abs=1e-4)
    with pytest.raises(UserError, match="runs out.*max_epochs=2"):
        run_pack(tmp_path / "bad", bytelevel_tok, small, en_corpus, ratio=0.5, tokens=1000, max_epochs=2)
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("add_bos_token", [None, True, False])
def test_bos_where_the_tokenizer_adds_one(add_bos_token, tmp_path, metaspace_tok, hu_corpus, en_corpus):
    """Llama-2 style: the template starts with <s>; an explicit add_bos_token in tokenizer_config wins."""
    tok_dir = tmp_path / "tok"
    shutil.copytree(metaspace_tok, tok_dir)
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    data["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {
                              "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}  # fmt: skip
    (tok_dir / "tokenizer.json").write_text(json.dumps(data))
    if add_bos_token is not None:
        cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
        (tok_dir / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": add_bos_token}))
    info = run_pack(tmp_path / "out", tok_dir, hu_corpus, en_corpus, tokens=2000)["tokenizer"]
    docs = documents(tmp_path / "out", info["eos_id"])
    if add_bos_token is False:
        assert info["bos"] is None and "add_bos_token=false" in info["bos_reason"]
        assert not any(d[0] == 1 for d in docs)
    else:
        assert info["bos"] == "<s>" and info["bos_id"] == 1
        assert ("post_processor" if add_bos_token is None else "add_bos_token=true") in info["bos_reason"]
        assert all(d[0] == 1 for d in docs)


def test_check_tokenizer(tmp_path, packed, bytelevel_tok, metaspace_tok):
    from transformers import AutoTokenizer

    folder, _ = packed
    check_tokenizer(folder, bytelevel_tok)
    resaved = tmp_path / "resaved"  # as a model folder holds it after save_pretrained
    AutoTokenizer.from_pretrained(bytelevel_tok).save_pretrained(resaved)
    check_tokenizer(folder, resaved)
    with pytest.raises(UserError, match="another tokenizer"):
        check_tokenizer(folder, metaspace_tok)
    with pytest.raises(UserError, match="not a finished packed"):
        PackedDataset(tmp_path)


@pytest.mark.parametrize("case", ["ratio-high", "ratio-zero", "missing", "exists"])
def test_bad_input_via_cli(case, tmp_path, capsys, bytelevel_tok, hu_corpus, en_corpus):
    out = tmp_path / "out"
    args = ["data", "pack", "--tokenizer", str(bytelevel_tok), "--target", str(hu_corpus), "--english",
            str(en_corpus), "--out", str(out), "--seq-len", "64", "--tokens", "1000", "--workers", "1"]  # fmt: skip
    if case == "ratio-high":
        args += ["--ratio", "1.5"]
    elif case == "ratio-zero":
        args += ["--ratio", "0"]
    elif case == "missing":
        args[5] = str(tmp_path / "nope.jsonl")
    else:
        out.mkdir()
        (out / "keep").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    if case == "exists":
        assert [p.name for p in out.iterdir()] == ["keep"]
    else:
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_reader_pickles_without_copying_rows(packed):
    import pickle

    folder, _ = packed
    ds = PackedDataset(folder)
    blob = pickle.dumps(ds)
    assert len(blob) < 1000
    again = pickle.loads(blob)
    assert np.array_equal(again[3]["input_ids"], ds[3]["input_ids"])
