"""Fixed-prompt samples: prompts taken from held-out text, the same prompts for every model, repetition
measured, greedy (the same output twice), and bad input as one line; plus the bpb document cut."""

from __future__ import annotations

import json

import pytest
import tiny

from langadapt.cli import main
from langadapt.corpus.readers import cut_document, read_heldout
from langadapt.eval import samples as S

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_opening_is_the_first_long_paragraph_cut_at_a_word():
    text = "Title\n\nA short one.\n\n" + "word " * 40 + "\n\nlater paragraph " * 5
    assert S.opening(text, min_chars=30, max_chars=52) == " ".join(["word"] * 10)
    assert S.opening("Title\n\nshort", min_chars=30, max_chars=52) is None
    assert S.opening("ไม่มีช่องว่าง" * 10, min_chars=10, max_chars=20) == ("ไม่มีช่องว่าง" * 10)[:20]


def test_distinct_bigrams_falls_when_a_model_loops():
    assert S.distinct_bigrams("a b c d e") == 1.0
    assert S.distinct_bigrams("a b a b a b a b a") == pytest.approx(2 / 8)
    assert S.distinct_bigrams("one") is None
    # a loop glued together by punctuation is still a loop (whitespace-split words would call it 1 bigram)
    assert S.distinct_bigrams("kijelölt-benkel-benkel-benkel-benkel") == pytest.approx(3 / 8)
    assert S.distinct_bigrams("Ez egy mondat, és még egy.") == 1.0


def test_documents_are_cut_to_the_same_text_for_every_model(tmp_path, hu_texts):
    assert cut_document("abc def ghi", 8) == "abc def" and cut_document("abc", 8) == "abc"
    assert cut_document("x" * 20, 8) == "x" * 8  # no whitespace: at the character count
    path = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts[:20])
    texts = read_heldout({"target": [str(path)]}, 20, max_chars=300)["target"]
    assert all(len(t) <= 300 for t in texts) and any(len(t) < len(h) for t, h in zip(texts, hu_texts))


def test_every_model_continues_the_same_prompts(tmp_path, tiny_tied, tiny_untied_padded, hu_texts, en_texts):
    hu = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts[:30])
    en = tiny.write_jsonl(tmp_path / "en.jsonl", en_texts[:30])
    argv = ["eval", "samples", "--models", str(tiny_tied), str(tiny_untied_padded), "--target", str(hu),
            "--english", str(en), "--tgt", "hu", "--per-language", "2", "--max-new-tokens", "6"]  # fmt: skip
    main([*argv, "--out", str(tmp_path / "a")])
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [p["lang"] for p in results["prompts"]] == ["hu", "hu", "en", "en"]
    assert all(20 <= len(p["prompt"]) <= 80 for p in results["prompts"])
    assert [m["label"] for m in results["models"]] == ["base", tiny_untied_padded.name]
    for m in results["models"]:
        assert [s["prompt"] for s in m["samples"]] == [p["prompt"] for p in results["prompts"]]
        assert all("\n" not in s["output"] for s in m["samples"])
    lines = (tmp_path / "a" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 8
    main([*argv, "--out", str(tmp_path / "b")])  # greedy: the same outputs again
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [s["output"] for m in again["models"] for s in m["samples"]] == [
        s["output"] for m in results["models"] for s in m["samples"]
    ]


def test_a_prompts_file_without_prompts_is_one_line(tmp_path, tiny_tied, capsys):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"lang": "hu", "text": "no prompt field"}\n')
    with pytest.raises(SystemExit) as exc:
        main(["eval", "samples", "--models", str(tiny_tied), "--prompts", str(bad), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "prompts.jsonl" in err and "'prompt'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
