"""Multiple-choice evaluation: lm-eval's context/continuation split, acc / acc_norm / acc_bytes, batching that
does not move a score, the pick-the-translation task builder, and bad input as one line."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import tiny

from langadapt.cli import main
from langadapt.data.tokens import tokenizer_fingerprint
from langadapt.eval import choice as CH
from langadapt.eval import choice_task

pytestmark = pytest.mark.usefixtures("one_thread")


def write_task(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    return write_task(path, pairs)


def parallel(n: int, hu_texts: list[str], en_texts: list[str]) -> list[dict]:
    """``n`` pairs of short sentences of varied length; every fifth pair repeats an earlier target."""
    pairs = []
    for i in range(n):
        hu = hu_texts[i].split(".")[0][: 20 + 3 * (i % 17)].strip() or f"mondat {i}"
        if i % 5 == 4:
            hu = pairs[i - 2]["hu"]  # the same translation twice: a distractor must still differ from it
        pairs.append({"en": en_texts[i][:60], "hu": hu, "source": "test", "id": str(i),
                      "split": "valid" if i % 4 else "train"})  # fmt: skip
    return pairs


def load(path):
    from langadapt.models import load_model, load_tokenizer

    return load_model(path), load_tokenizer(path)


# ------------------------------------------------------------------------------------------ split


def test_split_moves_trailing_whitespace_and_matches_the_joined_tokenization(bytelevel_tok):
    from langadapt.models import load_tokenizer

    tok = load_tokenizer(bytelevel_tok)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    ctx, cont = CH.split_request(tok, "The answer is \n ", "yes")
    assert ctx == enc("The answer is")  # the trailing "\n " went to the continuation
    assert ctx + cont == enc("The answer is \n yes")
    assert tok.decode(cont) == " \n yes"
    ctx, cont = CH.split_request(tok, "Question: what colour is the sky?", " blue")
    assert ctx + cont == enc("Question: what colour is the sky? blue") and tok.decode(cont) == " blue"
    assert CH.split_request(tok, "", " blue") == ([], enc(" blue"))  # empty context: only the doc start


def test_every_prompt_starts_with_the_document_start_token(bytelevel_tok):
    from langadapt.models import load_tokenizer
    from langadapt.tokenizer.document import document_start

    tok = load_tokenizer(bytelevel_tok)
    start = document_start(tok)
    items = [CH.Item("Is it?", ("yes", "no"), 0), CH.Item("", ("a b", "c"), 1, context="")]
    requests = CH.build_requests(tok, items, start)
    assert requests.index == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(ctx[0] == start.token_id for ctx in requests.contexts)
    assert requests.contexts[2] == [start.token_id]
    assert requests.continuations[0] == tok(" yes", add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------- metrics


def test_acc_acc_norm_acc_bytes_on_known_logprobs():
    items = [
        # sum picks 0; per character picks 1 (-1.1 < -1.0); per byte picks 0 ("őőő" is 6 bytes: -0.55)
        CH.Item("q1", ("őőő", "abcd"), 0),
        # sum picks 1; per character 0 (-0.5 vs -0.6); per byte 0
        CH.Item("q2", ("xxxxxxxx", "yyyyy"), 0),
        # every metric picks 2, the answer
        CH.Item("q3", ("a", "b", "c"), 2),
        # a tie goes to the first choice, as numpy.argmax: wrong
        CH.Item("q4", ("p", "q"), 1),
    ]
    logprobs = [[-3.3, -4.0], [-4.0, -3.0], [-5.0, -5.0, -1.0], [-2.0, -2.0]]
    assert CH.predictions(items[0].choices, logprobs[0]) == {"acc": 0, "acc_norm": 1, "acc_bytes": 0}
    summary = CH.summarize(items, logprobs)
    assert summary["n"] == 4
    assert summary["acc"] == 2 / 4 and summary["acc_norm"] == 2 / 4 and summary["acc_bytes"] == 3 / 4
    assert summary["chance"] == pytest.approx((0.5 + 0.5 + 1 / 3 + 0.5) / 4)
    stderr = math.sqrt(0.75 * 0.25 * 4 / 3) / 2  # sample std / sqrt(n)
    assert summary["acc_bytes_stderr"] == pytest.approx(stderr)
    assert summary["acc_bytes_ci95"] == pytest.approx([0.75 - 1.96 * stderr, 1.0], abs=1e-3)  # clipped at 1


def test_the_stage_reports_the_scores_of_known_logprobs(tmp_path, tiny_tied, monkeypatch):
    """A fake log-likelihood that always prefers the right choice: accuracy 1 in results, samples, stage.json."""
    items = [{"question": f"q{i}", "choices": ["a", "bb", "ccc"], "answer": i % 3} for i in range(7)]
    task = write_task(tmp_path / "task.jsonl", items)

    def fake(model, tokenizer, items, **kwargs):
        lps = [[-1.0 if j == item.answer else -9.0 for j in range(len(item.choices))] for item in items]
        info = {"doc_start": "<s>", "doc_start_id": 0, "doc_start_rule": "fake", "truncated": 0,
                "split_mismatches": 0, "tokens": [[1] * len(item.choices) for item in items]}  # fmt: skip
        return lps, info

    monkeypatch.setattr(CH, "score_items", fake)
    record = tiny.run_stage("choice", CH.ChoiceConfig(models=[str(tiny_tied)], task=str(task), max_items=5,
                                                      device="cpu"), tmp_path / "out")  # fmt: skip
    (label,) = record["models"]
    assert record["models"][label] == {"n": 5, "acc": 1.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    results = tiny.read_json(tmp_path / "out" / CH.RESULTS_JSON)
    assert results["items"] == 5 and results["max_items"] == 5
    assert results["models"][0]["chance"] == pytest.approx(1 / 3)
    samples = [json.loads(line) for line in (tmp_path / "out" / CH.SAMPLES_JSONL).read_text().splitlines()]
    assert [s["predicted"] for s in samples] == [s["answer"] for s in samples] == [0, 1, 2, 0, 1]


# ---------------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def uniform_model(tmp_path_factory, tiny_untied_padded):
    """The tiny untied model with a zero head: every token of every row has log-probability -ln V."""
    import torch

    model, tok = load(tiny_untied_padded)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    out = tmp_path_factory.mktemp("uniform")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_model_that_prefers_the_right_choice_gets_accuracy_1(tmp_path, uniform_model, capsys):
    """Under a uniform model a continuation of k tokens scores -k ln V: the one-token choice wins."""
    from langadapt.tokenizer.document import document_start

    model, tok = load(uniform_model)
    items = [{"question": "Pick the short one.", "choices": ["the", "zqxv wkpj ßøæ", "ŁŁŁŁ ŁŁŁŁ ŁŁ"], "answer": 0},
             {"context": "Context. ", "question": "Again:", "choices": ["xyzzy qwop", "of"], "answer": 1},
             {"question": "", "choices": ["ŐŰ ŐŰ ŐŰ ŐŰ", "ŐŰŐŰ ŐŰ", "and"], "answer": 2}]  # fmt: skip
    task = write_task(tmp_path / "task.jsonl", items)
    main(["eval", "choice", "--models", str(uniform_model), "--task", str(task), "--device", "cpu",
          "--batch-size", "2", "--out", str(tmp_path / "out")])  # fmt: skip
    assert "acc_norm" in capsys.readouterr().out  # the printed table
    results = tiny.read_json(tmp_path / "out" / CH.RESULTS_JSON)
    (m,) = results["models"]
    assert m["acc"] == m["acc_norm"] == m["acc_bytes"] == 1.0 and m["n"] == 3
    assert m["doc_start"] == document_start(tok).token
    assert m["tokenizer_sha256"] == tokenizer_fingerprint(uniform_model)[:16]
    assert results["scoring"]["continuation_template"] == " {choice}"
    ln_v = math.log(model.get_output_embeddings().weight.shape[0])  # padding rows included
    for sample, item in zip((tmp_path / "out" / CH.SAMPLES_JSONL).read_text().splitlines(), items):
        sample = json.loads(sample)
        assert sample["prompt"] == item.get("context", "") + item["question"]
        n_tokens = [len(CH.split_request(tok, sample["prompt"], " " + c)[1]) for c in item["choices"]]
        assert sample["tokens"] == n_tokens
        assert sample["logprobs"] == pytest.approx([-k * ln_v for k in n_tokens], rel=1e-5)
        assert sample["predicted"] == item["answer"]
    stage = tiny.read_json(tmp_path / "out" / "stage.json")
    assert stage["models"][m["label"]]["acc"] == 1.0


def test_scores_do_not_depend_on_batch_size(tiny_tied, hu_texts):
    model, tok = load(tiny_tied)
    items = [CH.Item(hu_texts[i][: 10 + 7 * i], tuple(t[: 3 + 5 * j] for j, t in enumerate(hu_texts[20 + i : 24 + i])),
                     i % 4, context="Szöveg: " if i % 2 else "")
             for i in range(9)]  # fmt: skip
    reference, _ = CH.score_items(model, tok, items, batch_size=1)
    for batch_size in (3, 8, 64):
        logprobs, _ = CH.score_items(model, tok, items, batch_size=batch_size)
        for got, want in zip(logprobs, reference):
            assert got == pytest.approx(want, abs=1e-4)
    assert CH.summarize(items, logprobs) == CH.summarize(items, reference)


# ------------------------------------------------------------------------------------ make-choice


def test_make_choice_balances_answers_and_never_repeats_the_answer(tmp_path, hu_texts, en_texts, tiny_tied):
    pairs = parallel(60, hu_texts, en_texts)
    path = write_pairs(tmp_path / "en-hu.jsonl", pairs)
    main(
        [
            "eval",
            "make-choice",
            "--pairs",
            str(path),
            "--src",
            "en",
            "--tgt",
            "hu",
            "--out",
            str(tmp_path / "t"),
        ]
    )
    lines = (tmp_path / "t" / CH.TASK_JSONL).read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines]
    valid = [p for p in pairs if p["split"] == "valid"]
    assert len(items) == len(valid) == 45
    by_src = {f"en: {p['en']}\nhu:": p["hu"] for p in valid}
    for item in items:
        truth = by_src[item["question"]]
        assert len(item["choices"]) == 4 and item["choices"][item["answer"]] == truth
        others = [c for k, c in enumerate(item["choices"]) if k != item["answer"]]
        assert truth.strip() not in {c.strip() for c in others} and len(set(others)) == 3
    counts = Counter(item["answer"] for item in items)
    assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 4
    record = tiny.read_json(tmp_path / "t" / "stage.json")
    assert record["items"] == 45 and sorted(record["answer_positions"]) == sorted(counts.values())

    # deterministic for a seed, another seed draws otherwise; max_items samples
    main(["eval", "make-choice", "--tgt", "hu", "--pairs", str(path), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / CH.TASK_JSONL).read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    main(["eval", "make-choice", "--tgt", "hu", "--pairs", str(path), "--seed", "1", "--max-items", "10", "--n-choices", "3",
          "--split", "", "--out", str(tmp_path / "other")])  # fmt: skip
    other = [
        json.loads(x) for x in (tmp_path / "other" / CH.TASK_JSONL).read_text(encoding="utf-8").splitlines()
    ]
    assert len(other) == 10 and all(len(i["choices"]) == 3 for i in other)
    assert sorted(Counter(i["answer"] for i in other).values()) == [3, 3, 4]

    # the task is a valid --task of eval choice
    main(["eval", "choice", "--models", str(tiny_tied), "--task", str(tmp_path / "other" / CH.TASK_JSONL),
          "--device", "cpu", "--out", str(tmp_path / "scored")])  # fmt: skip
    results = tiny.read_json(tmp_path / "scored" / CH.RESULTS_JSON)
    assert results["models"][0]["n"] == 10 and results["models"][0]["chance"] == pytest.approx(1 / 3)


def test_distractors_are_the_nearest_in_length():
    pool = sorted(["a" * n for n in (1, 2, 3, 5, 8, 13, 21)], key=len)
    near = choice_task.nearest_by_length(pool, [len(t) for t in pool], "a" * 5, 3)
    assert sorted(map(len, near)) == [2, 3, 8]  # never the target itself
    assert len(choice_task.nearest_by_length(pool, [len(t) for t in pool], "b", 20)) == 7


# -------------------------------------------------------------------------------------- bad input


def _bad_cases(tiny_tied):
    ok_item = {"question": "q", "choices": ["a", "b"], "answer": 0}
    return {
        "no language field": ("pairs.jsonl", [{"en": "Hello", "de": "Hallo", "split": "valid"}] * 5,
                              ["eval", "make-choice", "--tgt", "hu", "--pairs"], "has no field 'hu'"),
        "fewer pairs than choices": ("pairs.jsonl", [{"en": f"e{i}", "hu": f"h{i}"} for i in range(3)],
                                     ["eval", "make-choice", "--tgt", "hu", "--pairs"], "only 3 pairs"),
        "empty task": ("task.jsonl", [], ["eval", "choice", "--models", str(tiny_tied), "--task"], "no items"),
        "answer out of range": ("task.jsonl", [ok_item, {**ok_item, "answer": 2}],
                                ["eval", "choice", "--models", str(tiny_tied), "--task"],
                                "line 2: answer 2 is out of range for 2 choices"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["no language field", "fewer pairs than choices", "empty task",
                                  "answer out of range"])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, tiny_tied, capsys):
    name, lines, argv, message = _bad_cases(tiny_tied)[case]
    path = write_task(tmp_path / name, lines)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, str(path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and message in err, err
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no output folder, no work folder


def test_mcnemar_counts_only_the_items_the_models_disagree_on():
    from langadapt.eval.choice import mcnemar_p

    same = [True, False, True, True]
    assert mcnemar_p(same, same) == 1.0  # no disagreement: no evidence of a difference
    # 10 items the second gets right and the first does not, none the other way: 2 / 2**10
    assert mcnemar_p([False] * 10 + [True] * 5, [True] * 15) == pytest.approx(2 / 1024)
    # a balanced disagreement is no difference at all, whatever the shared items
    assert mcnemar_p([True, False] * 5, [False, True] * 5) == 1.0
