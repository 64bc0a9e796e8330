"""Demonstration chat data and the chat evaluation: held-out material stays out of training, every
preference has a wrong answer, margins are antisymmetric, and bad input is one line."""

from __future__ import annotations

import gzip
import json

import pytest
import tiny

from langadapt.cli import main
from langadapt.data import chat_data as CD
from langadapt.eval import chat as EC

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = tiny.DEMO_DATA / "en-hu-pairs.jsonl.gz"


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat") / "chat-data"
    d = tiny.DEMO_DATA
    main(["data", "make-chat", "--pairs", str(PAIRS), "--target", str(d / "hu-train.jsonl.gz"),
          "--english", str(d / "en-train.jsonl.gz"), "--target-heldout", str(d / "hu-valid.jsonl.gz"),
          "--tgt", "hu", "--tgt-name", "Hungarian", "--translation-items", "12", "--heading-items", "8",
          "--heldout-items", "6", "--out", str(out)])  # fmt: skip
    return out


def test_headings_are_short_first_paragraphs():
    docs = ["Save Source As\n\nSaves the source code of the selected Basic macro.\n\nmore",
            "A first paragraph that is a sentence, not a heading.\n\nSaves the source code of it all.",
            "Heading\n\nshort"]  # fmt: skip
    assert CD.headed_paragraphs(docs, min_chars=20) == [
        ("Save Source As", "Saves the source code of the selected Basic macro.")
    ]


def test_held_out_pairs_never_reach_training_and_preferences_differ(chat_dir):
    with gzip.open(PAIRS, "rt", encoding="utf-8") as fh:
        valid = {json.loads(line)["en"] for line in fh if json.loads(line)["split"] == "valid"}
    training = "".join((chat_dir / CD.FILES[role]).read_text()
                       for role in ("sft_english", "sft_target", "preferences_english", "preferences_target"))
    held = _read(chat_dir / CD.FILES["heldout_pairs"])
    assert len(held) == 6 and all(p["en"] in valid for p in held)
    assert not any(json.dumps(p["en"], ensure_ascii=False)[1:-1] in training for p in held)
    prefs = _read(chat_dir / CD.FILES["preferences_english"]) + _read(chat_dir / CD.FILES["preferences_target"])
    assert len(prefs) == 2 * 12 + 8 + 8
    assert all(p["chosen"][0]["content"] != p["rejected"][0]["content"] for p in prefs)
    chats = _read(chat_dir / CD.FILES["sft_english"])
    assert all([m["role"] for m in c["messages"]] == ["user", "assistant"] for c in chats)
    to_translate = _read(chat_dir / CD.FILES["to_translate"])  # the English heading tasks, for data translate
    assert len(to_translate) == 8 and all(c in chats for c in to_translate)


def test_margins_flip_when_chosen_and_rejected_swap(tiny_tied, chat_dir):
    from langadapt.models import load_model, load_tokenizer

    model, tok = load_model(tiny_tied), load_tokenizer(tiny_tied)
    items = EC.read_preferences(str(chat_dir / CD.FILES["heldout_preferences"]))[:4]
    swapped = [{**it, "chosen": it["rejected"], "rejected": it["chosen"]} for it in items]
    same = [{**it, "rejected": it["chosen"]} for it in items]
    lp = EC.preference_logprobs(model, tok, items, batch_size=4, bf16=False)
    lp_swapped = EC.preference_logprobs(model, tok, swapped, batch_size=3, bf16=False)
    for (c, r), (c2, r2) in zip(lp, lp_swapped):
        assert c == pytest.approx(r2, abs=1e-4) and r == pytest.approx(c2, abs=1e-4) and c < 0
    assert all(c == pytest.approx(r, abs=1e-6) for c, r in EC.preference_logprobs(model, tok, same, batch_size=4,
                                                                                 bf16=False))  # fmt: skip


def test_eval_chat_measures_every_model(tmp_path, tiny_tied, tiny_untied_padded, chat_dir):
    argv = ["eval", "chat", "--models", str(tiny_tied), str(tiny_untied_padded),
            "--preferences", str(chat_dir / CD.FILES["heldout_preferences"]),
            "--pairs", str(chat_dir / CD.FILES["heldout_pairs"]), "--prompts", str(chat_dir / CD.FILES["heldout_prompts"]),
            "--english", str(tiny.DEMO_DATA / "en-valid.jsonl.gz"), "--max-docs", "2", "--max-doc-chars", "300",
            "--tgt", "hu", "--max-new-tokens", "4", "--max-new-tokens-factor", "0.2", "--max-new-tokens-extra", "1",
            "--first-is-base", "--out", str(tmp_path / "ev")]  # fmt: skip
    main(argv)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["models"][0]["label"] == "base"  # the reference the p-values compare with
    for m in results["models"]:
        assert m["preferences"]["n"] == 12 and 0 <= m["preferences"]["accuracy"] <= 1
        assert m["translation"]["n"] == 6 and 0 <= m["translation"]["chrf++"] <= 100
        assert m["prompts"]["n"] == 6 and m["english"]["bpb"] > 0
    assert "chrf++_p_vs_first" in results["models"][1]["translation"]


def test_a_preference_item_without_chosen_is_one_line(tmp_path, tiny_tied, capsys):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"prompt": "q", "rejected": "no"}\n')
    with pytest.raises(SystemExit) as exc:
        main(["eval", "chat", "--models", str(tiny_tied), "--preferences", str(bad), "--tgt", "hu",
              "--out", str(tmp_path / "o")])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "prefs.jsonl" in err and "'chosen'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_looped_answer_repeats_the_start_of_the_right_one():
    right = "A hivatkozott cella munkalap- és fájlnevét adja vissza egy komplex szám koszinuszát."
    bad = CD.looped(right)
    assert bad != right and bad.startswith("A hivatkozott A hivatkozott")
    assert len(set(zip(bad.split(), bad.split()[1:]))) <= 2  # a loop: two distinct bigrams
