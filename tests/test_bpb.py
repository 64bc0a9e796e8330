"""Bits per byte: deterministic, independent of batching, every token scored once from the same start."""

from __future__ import annotations

import pytest
import torch

from langadapt.scoring import bpb_of_model, windows
from langadapt.tokenizer.document import document_start

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n,max_len,stride", [(1, 8, 4), (8, 8, 4), (9, 8, 4), (50, 8, 3), (50, 16, 15)])
def test_windows_score_every_target_once(n, max_len, stride):
    scored = []
    for first, end, start in windows(n, max_len, stride):
        assert end - first <= max_len and first < start <= end and first <= start - 1
        scored += range(start, end)
    assert scored == list(range(1, n))


def test_stride_must_leave_context():
    from langadapt.errors import UserError

    with pytest.raises(UserError):
        windows(10, 8, 8)


def _load(path):
    from langadapt.models import load_model, load_tokenizer

    return load_model(path), load_tokenizer(path)


def test_model_against_itself_is_identical(tiny_untied_padded, hu_corpus, tmp_path, capsys):
    """Through the ``eval bpb`` stage from the CLI: metrics.json, stage.json, the printed table."""
    import json

    from langadapt.cli import main

    model = str(tiny_untied_padded)
    main(["eval", "bpb", "--models", model, model, "--target", str(hu_corpus), "--max-docs", "5",
          "--batch-size", "3", "--max-len", "64", "--stride", "32", "--no-bf16", "--out", str(tmp_path / "e")])  # fmt: skip
    rows = [m["target"] for m in json.loads((tmp_path / "e" / "metrics.json").read_text())["models"]]
    assert rows[0]["bpb"] == rows[1]["bpb"] and rows[0]["nats"] == rows[1]["nats"]
    assert rows[0]["docs"] == 5 and rows[0]["doc_start"] == "<|endoftext|>"
    assert rows[0]["tokens_per_word"] > 1 and rows[0]["bf16"] is False
    assert json.loads((tmp_path / "e" / "stage.json").read_text())["config"]["max_docs"] == 5
    assert "bits/byte" in capsys.readouterr().out


@pytest.mark.parametrize("fixture", ["tiny_tied", "tiny_untied_padded"])
def test_bpb_does_not_depend_on_batch_size(fixture, request, hu_texts):
    model, tok = _load(request.getfixturevalue(fixture))
    texts = hu_texts[:7]
    results = [bpb_of_model(model, tok, texts, batch_size=b, max_len=48, stride=16) for b in (1, 3, 16)]
    assert results[0]["tokens"] == results[1]["tokens"] == results[2]["tokens"]
    for r in results[1:]:
        assert r["bpb"] == pytest.approx(results[0]["bpb"], rel=1e-6)


def test_bpb_definition_on_one_short_document(tiny_tied, hu_texts):
    """Summed next-token nats of the whole document after the start token, / ln 2 / UTF-8 bytes."""
    import math

    model, tok = _load(tiny_tied)
    text = hu_texts[0][:200]
    ids = torch.tensor([[document_start(tok).token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nats = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    got = bpb_of_model(model, tok, [text], max_len=1024, stride=512)
    assert got["bpb"] == pytest.approx(nats / math.log(2) / len(text.encode("utf-8")), rel=1e-5)


def test_document_start_rules(bytelevel_tok, metaspace_tok):
    from langadapt.models import load_tokenizer

    assert document_start(load_tokenizer(bytelevel_tok)).rule == "document separator"
    assert document_start(load_tokenizer(metaspace_tok)).token == "</s>"
