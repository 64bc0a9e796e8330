"""Few-shot translation: scores of a perfect translation, prompts that never hold their answer, seeded
shots, newline cuts, batching that does not move an output, the token-count cap, and bad input as one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tiny

from langadapt import prompts as P
from langadapt.cli import main
from langadapt.config import TranslateConfig
from langadapt.eval import translate as T

pytestmark = pytest.mark.usefixtures("one_thread")


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path


def parallel(n: int, hu_texts: list[str], en_texts: list[str], split: bool = True) -> list[dict]:
    pairs = []
    for i in range(n):
        pair = {"en": en_texts[i].split(".")[0][:50].strip() or f"sentence {i}",
                "hu": hu_texts[i].split(".")[0][:50].strip() or f"mondat {i}"}  # fmt: skip
        if split:
            pair["split"] = "valid" if i % 3 else "train"
        pairs.append(pair)
    return pairs


def load(path):
    from langadapt.models import load_model, load_tokenizer

    return load_model(path), load_tokenizer(path)


def test_a_perfect_translation_scores_100():
    refs = [
        "The cat sat on the mat today.",
        "A quick brown fox jumps over the lazy dog.",
        "Hello there, my friend!",
    ]
    scores = T.score(refs, refs, seed=0, n_samples=50, baseline=refs)
    for metric in T.METRICS:
        assert scores[metric] == pytest.approx(100.0)
        assert scores[f"{metric}_ci95"] == pytest.approx([100.0, 100.0])
    assert "nw:2" in scores["chrf++_signature"] and "tok:13a" in scores["bleu_signature"]
    assert scores["chrf++_p_vs_first"] == pytest.approx(1.0)  # identical systems: no difference
    worse = T.score(["x"] * 3, refs, seed=0, n_samples=50)
    assert worse["chrf++"] < 20


def test_shots_are_seeded_and_never_a_test_item(hu_texts, en_texts):
    pairs = parallel(60, hu_texts, en_texts, split=False)
    test, pool = P.split_items(pairs, "valid", 20, seed=3)
    assert len(test) == 20 and len(pool) == 40
    a = P.choose_shots(pool, test, "en", "hu", 5, seed=3)
    assert a == P.choose_shots(pool, test, "en", "hu", 5, seed=3)
    assert a != P.choose_shots(pool, test, "en", "hu", 5, seed=4)
    assert not {p["en"] for p in a} & {p["en"] for p in test}
    prompt = P.build_prompt([("a b", "c d"), ("e", "f")], "g h")
    assert prompt == "a b = c d\n\ne = f\n\ng h ="


def test_the_cut_is_at_the_first_newline(bytelevel_tok):
    from langadapt.models import load_tokenizer

    tok = load_tokenizer(bytelevel_tok)
    ids = tok("the cat\nsat there", add_special_tokens=False)["input_ids"]
    assert P.cut_output(tok, ids, 100) == ("the cat", False)
    plain = tok("the cat sat there", add_special_tokens=False)["input_ids"]
    assert P.cut_output(tok, plain, 3) == (tok.decode(plain[:3]), True)  # the cap reached without a newline
    assert P.cut_output(tok, plain, 100) == ("the cat sat there", False)  # stopped (EOS) before the cap


def test_caps_follow_the_reference_in_the_models_own_tokens(bytelevel_tok, metaspace_tok):
    from langadapt.models import load_tokenizer

    refs = ["Ez egy magyar mondat, amely hosszabb.", "Rövid."]
    for folder in (bytelevel_tok, metaspace_tok):
        tok = load_tokenizer(folder)
        counts = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs]
        assert P.token_caps(tok, refs, 1.5, 8) == [math.ceil(1.5 * c) + 8 for c in counts]


def test_batched_generation_equals_unbatched(tiny_tied, hu_texts, en_texts):
    model, tok = load(tiny_tied)
    prompts = [P.build_prompt([("one", "egy")], en_texts[i][: 10 + 7 * i]) for i in range(5)]
    caps = [3, 9, 5, 12, 6]
    one = P.generate(model, tok, prompts, caps, batch_size=1)
    four = P.generate(model, tok, prompts, caps, batch_size=4)
    assert one == four
    assert all("\n" not in text for text, _ in one)
    for (text, cut), cap in zip(one, caps):
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= cap + 1 or not cut


def test_the_stage_writes_results_and_prompts_never_hold_their_answer(tmp_path, tiny_tied, hu_texts, en_texts,
                                                                       capsys):  # fmt: skip
    pairs = write_pairs(tmp_path / "pairs.jsonl", parallel(30, hu_texts, en_texts))
    cfg = TranslateConfig(models=[str(tiny_tied), str(tiny_tied)], pairs=str(pairs), tgt="hu", shots=3, max_items=6,
                          directions=["src-tgt", "tgt-src"], max_new_tokens_extra=2, device="cpu", bf16=False)  # fmt: skip
    record = tiny.run_stage("translate", cfg, tmp_path / "out")
    assert set(record["models"]["base"]) == {"en-hu", "hu-en"}
    results = tiny.read_json(tmp_path / "out" / T.RESULTS_JSON)
    second = results["models"][1]["directions"]["en-hu"]
    assert second["chrf++_p_vs_first"] == pytest.approx(1.0)  # the same model twice
    assert 0 <= second["off_target_rate"] <= 1 and 0 <= second["truncation_rate"] <= 1
    samples = [json.loads(line) for line in (tmp_path / "out" / T.SAMPLES_JSONL).read_text().splitlines()]
    assert len(samples) == 2 * 2 * 6
    for s in samples:
        *shots, query = s["prompt"].split("\n\n")
        assert len(shots) == 3 and query.endswith(" =") and "\n" not in s["output"]
        for shot in shots:
            shot_src, shot_tgt = shot.split(" = ", 1)
            assert shot_src != query[: -len(" =")] and shot_tgt != s["reference"]
    from langadapt.stages import BY_NAME

    BY_NAME["translate"].printer()(record, tmp_path / "out")
    assert "chrF++" in capsys.readouterr().out


def _bad_cases(tiny_tied) -> dict:
    ok = [
        {"en": f"sentence {i}", "hu": f"mondat {i}", "split": "valid" if i % 2 else "train"}
        for i in range(10)
    ]
    base = ["eval", "translate", "--models", str(tiny_tied), "--tgt", "hu", "--device", "cpu"]
    return {
        "no language field": ([{"en": "a", "de": "b"}], [*base, "--shots", "0"], "line 1 has no field 'hu'"),
        "more shots than the pool": (ok, [*base, "--shots", "8"], "only 5 pairs for shots"),
        "no test items": (ok, [*base, "--split", "test", "--shots", "1"], "no test items of split 'test'"),
    }


@pytest.mark.parametrize("case", ["no language field", "more shots than the pool", "no test items"])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, tiny_tied, capsys):
    lines, argv, message = _bad_cases(tiny_tied)[case]
    path = write_pairs(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--pairs", str(path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and message in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]
