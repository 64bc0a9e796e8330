"""``tokenizer extend --workers N`` (issue 19): units counted in N processes give the same extension, and
byte-level bases count space-separated chunks first (``UnitSplitter.chunked``) with exactly the same units.

Batches are made small here so that even the tiny corpora are cut into many batches per worker (the
default, ~1M characters a batch, would send them whole to one worker).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import tiny

from langadapt.config import ExtendConfig
from langadapt.errors import UserError
from langadapt.tokenizer import base as base_module
from langadapt.tokenizer.base import CHUNK_CUT, count_units, load_base, unit_splitter

# the byte-level split regexes in use (GPT-2 = SmolLM2's, Llama-3, Llama-4, Qwen2, Qwen3.5, tekken)
BYTE_LEVEL = ["gpt2", "llama3", "llama4", "qwen2", "qwen35", "tekken"]
# spaces of every kind, newlines, punctuation on both sides of a space, contractions, digits, other scripts
ALPHABET = list(
    " \t\n\r  abcXYZáő'’\".,;:!?()[]{}/\\-_—–0123456789日本語ёж\u0301\u00a0\u3000\u2009\u200b\u0085\x1c"
    "#$%&*+<=>@^`|~´¿"
)


@pytest.fixture()
def small_batches(monkeypatch):
    monkeypatch.setattr(base_module, "BATCH_CHARS", 2_000)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, hu_texts, en_texts) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workers_corpora")
    return {"hu": tiny.write_jsonl(root / "hu.jsonl", hu_texts[:200]),
            "en": tiny.write_jsonl(root / "en.jsonl", en_texts[:150])}  # fmt: skip


def _mistral_v3() -> Path:
    from real_tokenizers import real_tokenizer

    return real_tokenizer("mistral-v3")  # split_words (units cut at ▁), and a tokenizer.model to write


@pytest.mark.parametrize("style", ["bytelevel", "metaspace", "mistral-v3"])
def test_units_are_the_same_counter_for_any_workers(style, small_batches, request, hu_texts):
    folder = _mistral_v3() if style == "mistral-v3" else request.getfixturevalue(f"{style}_tok")
    base = load_base(folder)
    one = count_units(base, hu_texts[:200])
    assert len(one) > 100  # the metaspace fixture keeps whole documents as units (many cross-word tokens)
    splitter = unit_splitter(base)
    assert dict(one) == dict(Counter(u for t in hu_texts[:200] for u in splitter(t)))  # document by document
    for workers in (2, 3):
        many = count_units(base, iter(hu_texts[:200]), workers)
        assert list(many.items()) == list(one.items())  # same counts, same order


@pytest.mark.parametrize("name", BYTE_LEVEL)
def test_chunked_counting_gives_exactly_the_units_of_whole_documents(name, hu_texts, en_texts):
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from real_tokenizers import real_tokenizer

    base = load_base(real_tokenizer(name))
    splitter = unit_splitter(base)
    assert splitter.chunked
    texts = hu_texts[:200] + en_texts[:200]
    whole = Counter(u for t in texts for u in splitter(t))  # the base's pre-tokenizer on each document
    assert dict(count_units(base, texts)) == dict(whole)

    @settings(max_examples=3000, deadline=None, database=None)
    @given(st.text(st.sampled_from(ALPHABET), max_size=40))
    def cut_text_splits_the_same(text):
        assert [u for chunk in CHUNK_CUT.split(text) for u in splitter(chunk)] == splitter(text)

    cut_text_splits_the_same()


@pytest.mark.parametrize("style", ["metaspace", "mistral-v3"])
def test_metaspace_bases_are_counted_document_by_document(style, request):
    """Their normalizers prepend ▁ to every text, so a chunk would not split as it does in its document."""
    folder = _mistral_v3() if style == "mistral-v3" else request.getfixturevalue("metaspace_tok")
    assert not unit_splitter(load_base(folder)).chunked


@pytest.mark.parametrize("style", ["bytelevel", "mistral-v3"])
def test_stage_output_is_byte_identical_for_1_and_4_workers(style, small_batches, request, corpora, tmp_path):
    folder = _mistral_v3() if style == "mistral-v3" else request.getfixturevalue("bytelevel_tok")
    outs = {}
    for workers in (1, 4):
        cfg = ExtendConfig(base=str(folder), corpus=[str(corpora["hu"])], english_corpus=[str(corpora["en"])],
                           num_new_tokens=120, workers=workers)  # fmt: skip
        outs[workers] = tiny.run_stage("extend", cfg, tmp_path / f"w{workers}")
    a, b = tmp_path / "w1", tmp_path / "w4"
    names = ["tokenizer.json", "tokenizer.model"] if style == "mistral-v3" else ["tokenizer.json"]
    assert (a / "tokenizer.model").is_file() == (style == "mistral-v3")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    record = {w: json.loads((tmp_path / f"w{w}" / "extension.json").read_text()) for w in (1, 4)}
    for r in record.values():
        r.pop("seconds")
    assert record[1] == record[4] and record[1]["added"] == 120
    # workers does not change the result: a rerun with another number keeps the finished folder
    cfg.workers = 2
    assert tiny.run_stage("extend", cfg, b).get("skipped")


def test_reading_waits_for_the_workers(small_batches, monkeypatch, bytelevel_tok, hu_texts):
    """Memory is bounded by distinct units: at most 2 batches per worker are read ahead of the merge."""
    pulled, seen = [0], []

    def texts():
        for t in hu_texts[:200]:
            pulled[0] += 1
            yield t

    merge = base_module._merge

    def watching_merge(counts, part):
        seen.append(pulled[0])
        merge(counts, part)

    monkeypatch.setattr(base_module, "_merge", watching_merge)
    count_units(load_base(bytelevel_tok), texts(), workers=2)
    per_batch = max(1, base_module.BATCH_CHARS // min(len(t) for t in hu_texts[:200]))
    assert len(seen) > 8
    for k, docs in enumerate(seen[:-5], 1):  # when the k-th batch is merged, at most k + 4 (+1) were read
        assert docs <= (k + 5) * per_batch


def test_bad_line_mid_corpus_is_the_user_error_with_workers(small_batches, bytelevel_tok, hu_texts, tmp_path):
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts[:120])
    lines = corpus.read_text().splitlines()
    lines.insert(100, "{not json")
    corpus.write_text("\n".join(lines) + "\n")
    cfg = ExtendConfig(base=str(bytelevel_tok), corpus=[str(corpus)], num_new_tokens=50, workers=2)
    with pytest.raises(UserError, match="line 101 is not JSON"):
        tiny.run_stage("extend", cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_workers_0_is_one_line_exit_2_and_leaves_nothing(bytelevel_tok, corpora, tmp_path):
    out = tmp_path / "run" / "tok"
    result = subprocess.run(
        [sys.executable, "-m", "langadapt.cli", "tokenizer", "extend", "--base", str(bytelevel_tok),
         "--corpus", str(corpora["hu"]), "--workers", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "workers must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
