"""The merge learner and the fertility sweep, on hand-made words and the tiny tokenizers."""

from __future__ import annotations

import itertools
import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from langadapt.tokenizer.merges import learn_merges, merge_word
from langadapt.tokenizer.metrics import fertility
from langadapt.tokenizer.sweep import suggest_size

STRINGS = {0: "a", 1: "b", 2: "c", 3: "ab"}


def pairs(word):
    return Counter(itertools.pairwise(word))


def test_merge_word_left_to_right_like_bpe():
    assert merge_word([0, 0, 0], 0, 0, 9)[0] == [9, 0]
    assert merge_word([0, 1, 0, 1, 2], 0, 1, 9)[0] == [9, 9, 2]
    assert merge_word([2, 2], 0, 1, 9) is None


@settings(max_examples=200, deadline=None)
@given(word=st.lists(st.integers(0, 2), max_size=12), a=st.integers(0, 2), b=st.integers(0, 2))
def test_merge_word_reports_exactly_the_changed_pairs(word, a, b):
    merged = merge_word(word, a, b, 9)
    if merged is None:
        assert (a, b) not in pairs(word)
        return
    new, gone, came = merged
    assert pairs(word) - Counter(gone) + Counter(came) == pairs(new)


def test_most_frequent_pair_first_and_deterministic_ties():
    words = [[0, 1, 2], [0, 1], [1, 2]]
    merges = learn_merges([list(w) for w in words], [1, 1, 1], {0: "a", 1: "b", 2: "c"}, next_id=10,
                          num_new_tokens=3, min_frequency=1)  # fmt: skip
    assert [(m.left, m.right) for m in merges][:1] == [(0, 1)]  # (0,1) and (1,2) tie at 2: smaller ids
    again = learn_merges([list(w) for w in words], [1, 1, 1], {0: "a", 1: "b", 2: "c"}, next_id=10,
                         num_new_tokens=3, min_frequency=1)  # fmt: skip
    assert merges == again


def test_existing_strings_reuse_ids_and_constraints_hold():
    words = [[0, 1, 2]] * 3
    merges = learn_merges([list(w) for w in words], [5, 5, 5], STRINGS, next_id=10, num_new_tokens=1,
                          min_frequency=2, forbidden_pairs={(1, 2)}, reserved_strings={"xyz"})  # fmt: skip
    assert (merges[0].left, merges[0].right, merges[0].result, merges[0].new) == (0, 1, 3, False)
    assert all((m.left, m.right) != (1, 2) for m in merges)
    assert [m.new for m in merges].count(True) == 1
    # barrier ids never merge; min_frequency stops learning
    assert learn_merges([[0, 1]], [5], STRINGS, next_id=10, num_new_tokens=5, barrier_ids={1}) == []
    assert learn_merges([[0, 2]], [1], STRINGS, next_id=10, num_new_tokens=5, min_frequency=2) == []


def test_suggest_size_is_the_knee():
    def rows(values):
        return [{"size": s, "target": {"tokens_per_word": v}} for s, v in values]

    assert suggest_size(rows([(500, 3.0), (1000, 2.5), (2000, 2.4), (4000, 2.35)]), 0.10) == 1000
    assert suggest_size(rows([(500, 3.0), (1000, 2.0)]), 0.10) is None


def test_sweep_writes_curve_and_reuses_one_run(tmp_path, bytelevel_tok, hu_corpus, en_corpus, capsys):
    from langadapt.cli import main

    main(["tokenizer", "sweep", "--base", str(bytelevel_tok), "--corpus", str(hu_corpus), "--sizes", "20", "40",
          "80", "--english-corpus", str(en_corpus), "--out", str(tmp_path / "sweep")])  # fmt: skip
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    stage = json.loads((tmp_path / "sweep" / "stage.json").read_text())
    assert stage["suggested_size"] == saved["suggested_size"] and stage["config"]["sizes"] == [20, 40, 80]
    assert [r["size"] for r in saved["rows"]] == [0, 20, 40, 80]
    tpw = [r["target"]["tokens_per_word"] for r in saved["rows"]]
    assert tpw == sorted(tpw, reverse=True) and tpw[-1] < tpw[0]
    assert len({r["english"]["tokens_per_word"] for r in saved["rows"]}) == 1  # English untouched
    assert saved["suggested_size"] in (20, 40, 80)
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "suggested size" in capsys.readouterr().out


def test_fertility_counts(bytelevel_tok):
    stats = fertility(bytelevel_tok, ["one two three", "four"])
    assert stats["docs"] == 2 and stats["words"] == 4 and stats["chars"] == len("onetwothreefour")
    assert stats["tokens_per_word"] == round(stats["tokens"] / 4, 4)
    assert stats["byte_fallback_share"] == 0 and not stats["unspaced_script"]
    assert fertility(bytelevel_tok, ["日本語の文章です。" * 3])["unspaced_script"]
