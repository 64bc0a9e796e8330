"""data translate: protected spans and code survive round trips, every filter drops what it should and counts
it, a run killed with SIGKILL halfway and rerun equals an uninterrupted one, seq2seq and chat-prompt
translators, and bad input as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from langadapt.cli import main
from langadapt.config import DataTranslateConfig
from langadapt.data import protect as P
from langadapt.data import translate as T
from langadapt.data import translators

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def chat(*contents: str, roles: tuple[str, ...] = ("user", "assistant")) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, contents)]}


# ------------------------------------------------------------------------------------------ masking

MESSAGE = """# Install `langadapt`
Hello {name}, run the script at https://example.com/run.sh?x=1 and read %s (or %(count)d, $HOME, ${PATH}).
- Send mail to help@example.org, then <b>click</b> {{button}}.

| Option | Meaning |
|---|---|
| `--out` | where the output goes |

```python
print("this is code, not text")  # {not} a $placeholder
```
> A quote with ⟦3⟧ and [[wiki]] in it.
1. Last item, 50% done."""
PROTECTED = ["`langadapt`", "{name}", "https://example.com/run.sh?x=1", "%s", "%(count)d", "$HOME", "${PATH}",
             "help@example.org", "<b>", "</b>", "{{button}}", "`--out`"]  # fmt: skip


def scramble(text: str) -> str:
    """A 'translation' that changes every word and moves the sentinels about (but keeps each once)."""
    sentinels = P.SENTINELS[0].pattern().findall(text)
    words = [w[::-1].upper() for w in P.SENTINELS[0].pattern().sub(" ", text).split()]
    return " ".join([*(f"⟦{n}⟧" for n in reversed(sentinels)), *words])


def test_placeholders_code_and_markdown_survive_a_round_trip():
    masked = P.mask(MESSAGE)
    sent = " ".join(s.text for s in masked.segments)
    for span in [*PROTECTED, "print(", "```", "https://", "|---|"]:
        assert span not in sent, span  # never shown to the translator
    there = P.unmask(masked, [scramble(s.text) for s in masked.segments])
    for span in PROTECTED:
        assert there.count(span) == MESSAGE.count(span), span
    code = MESSAGE[MESSAGE.index("```python") : MESSAGE.index("```\n>") + 3]
    assert code in there
    lines = there.split("\n")
    assert lines[0].startswith("# ") and lines[2].startswith("- ") and lines[5] == "|---|---|"
    assert lines[4].startswith("| ") and lines[4].count("|") == lines[6].count("|") == 3
    assert lines[-1].startswith("1. ")
    assert there.count("⟦") == there.count("⟧") == 1  # the source's own sentinel brackets, back once each
    identity = P.unmask(masked, [s.text for s in masked.segments])
    assert identity == MESSAGE


WORDS = st.sampled_from(["the", "cat", "Ő", "ü", "szia", "x1", "—", ",", "50%", "a.b", "[x]", "(y)"])
SPANS = st.sampled_from(["{n}", "{{v}}", "%s", "%(k)s", "%1$d", "$VAR", "${A_B}", "`co de`", "<br/>",
                         "https://a.io/p?q=1", "www.ex.com/x", "a@b.cd", "⟦", "⟧", "⟦2⟧", "[[",
                         "]]"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(WORDS, SPANS, st.sampled_from(["\n", "\n```\ncode {x}\n```\n", "\n- ", "\n| a | b |"])),
                max_size=30),
       st.sampled_from(P.SENTINELS))  # fmt: skip
def test_masking_round_trips_any_text(tokens, sentinel):
    text = " ".join(tokens)
    masked = P.mask(text, sentinel)
    assert P.unmask(masked, [s.text for s in masked.segments], sentinel) == text
    for s in masked.segments:
        assert P.restore(s, s.text, sentinel) is not None
        if s.spans:  # a lost, doubled or invented sentinel is caught
            assert P.restore(s, sentinel.pattern().sub("", s.text), sentinel) is None
            assert P.restore(s, s.text + " " + sentinel.make(1), sentinel) is None
            assert P.restore(s, s.text + " " + sentinel.make(len(s.spans) + 1), sentinel) is None


# ------------------------------------------------------------------------------------------ filters

# source text -> (its translation, the translation's back-translation; None: the source)
TABLE = {
    "The cat sleeps on the warm mat today.": ("A macska ma a meleg szőnyegen alszik.",
                                             "The cat sleeps on the warm mat today."),
    "Hello ⟦1⟧, welcome to the house.": ("Szia, üdvözöllek a házban.", None),
    "Please open the window now.": ("", None),
    "Please close the door behind you.": ("Please close the door behind you.", None),
    "Where is the train station in this city?": ("Hol van a vasútállomás ebben a városban? " * 4, None),
    "Where is the station in this city?": ("Где находится вокзал в этом городе?", None),
    "I have no time for this work today.": ("Ich habe heute keine Zeit für diese Arbeit.", None),
    "My brother bought a new red car yesterday.": ("A bátyám tegnap vett egy új piros autót.",
                                                  "Something completely unrelated happens here."),
    "Good morning, how are you today?": ("Jó reggelt, hogy vagy ma?", "Good morning, how are you today?"),
    "Run the command ⟦1⟧, then open the file.": ("Futtassa a parancsot ⟦1⟧, majd nyissa meg a fájlt.",
                                                "Run the command ⟦1⟧, then open the file."),
    "Please open the window.": ("Kérem, nyissa ki az ablakot.", "Please open the window."),
    "Please close the window.": ("Kérem, csukja be az ablakot.", "Please close the window."),
}  # fmt: skip
EXPECTED = {  # source_id -> reason (None: kept)
    "kept": None, "again": "duplicate", "placeholder": "broken placeholders", "empty": "empty translation",
    "copy": "untranslated copy", "long": "length ratio", "cyrillic": "script ratio", "german": "language id",
    "drift": "round-trip chrF", "code": None, "preference": None,
}  # fmt: skip


class Fake:
    """A translator by table lookup, logging what it was sent."""

    sentinel = P.SENTINELS[0]

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.back = {fwd: back or src for src, (fwd, back) in TABLE.items()}

    def describe(self) -> dict:
        return {"kind": "fake"}

    def load(self) -> None:
        pass

    def __call__(self, texts: list[str], src: str, tgt: str) -> list[str]:
        self.sent += texts
        return [TABLE[t][0] if src == "en" else self.back[t] for t in texts]


def filter_items() -> list[dict]:
    one = chat("The cat sleeps on the warm mat today.", roles=("user",))
    return [
        {"id": "kept", **one}, {"id": "again", **one},
        {"id": "placeholder", **chat("Hello {name}, welcome to the house.", roles=("user",))},
        {"id": "empty", **chat("Please open the window now.", roles=("user",))},
        {"id": "copy", **chat("Please close the door behind you.", roles=("user",))},
        {"id": "long", **chat("Where is the train station in this city?", roles=("user",))},
        {"id": "cyrillic", **chat("Where is the station in this city?", roles=("user",))},
        {"id": "german", **chat("I have no time for this work today.", roles=("user",))},
        {"id": "drift", **chat("Good morning, how are you today?", "My brother bought a new red car yesterday.")},
        {"id": "code", **chat("Run the command `ls -la`, then open the file.\n```sh\nls -la\n```",
                              roles=("system",))},
    ]  # fmt: skip


def test_every_filter_drops_what_it_should_and_counts_it(tmp_path, tiny_tied, monkeypatch):
    fake = Fake()
    monkeypatch.setattr(translators, "load_translator", lambda *a, **k: fake)
    chats = write_jsonl(tmp_path / "chat.jsonl", filter_items())
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": "preference", "prompt": [{"role": "user", "content": "Please open the window."}],
         "chosen": [{"role": "assistant", "content": "Please open the window."}],
         "rejected": [{"role": "assistant", "content": "Please close the window."}]}])  # fmt: skip
    main(["data", "translate", "--input", str(chats), str(prefs), "--translator", str(tiny_tied), "--tgt", "hu",
          "--prompt", "chat", "--device", "cpu", "--batch-size", "3", "--out", str(tmp_path / "out")])  # fmt: skip
    out = tmp_path / "out"
    rejects = {r["source_id"]: r for r in read_jsonl(out / T.REJECTS)}
    kept = read_jsonl(out / T.TRANSLATED / "chat.jsonl") + read_jsonl(out / T.TRANSLATED / "prefs.jsonl")
    got = {**{sid: r["reason"] for sid, r in rejects.items()}, **{r["source_id"]: None for r in kept}}
    assert got == EXPECTED
    summary = tiny.read_json(out / T.SUMMARY)
    assert summary["kept"] == 3 and summary["items"] == 11
    assert summary["dropped"] == {r: 1 for r in T.REASONS}
    assert rejects["long"]["detail"].endswith("outside [0.4, 2.5]")
    assert rejects["drift"]["detail"].startswith("messages.1.content: ")  # the text that failed
    assert rejects["again"]["detail"] == "same item as kept"
    # the translated item keeps the schema, its id first; code and inline code were never sent
    by_id = {r["source_id"]: r for r in kept}
    assert list(by_id["kept"]) == ["id", "source_id", "messages"]
    assert by_id["kept"]["messages"] == [{"role": "user", "content": "A macska ma a meleg szőnyegen alszik."}]
    assert by_id["code"]["messages"][0]["content"] == ("Futtassa a parancsot `ls -la`, majd nyissa meg a fájlt."
                                                       "\n```sh\nls -la\n```")  # fmt: skip
    assert not any("ls -la" in t or "```" in t for t in fake.sent)
    assert fake.sent.count("Please open the window.") == 1  # the preference prompt once (and the same chosen text)
    assert by_id["preference"]["prompt"][0]["content"] == "Kérem, nyissa ki az ablakot."
    assert by_id["preference"]["rejected"][0]["content"] == "Kérem, csukja be az ablakot."
    assert len({r["id"] for r in kept}) == 3 and rejects["again"]["id"] == by_id["kept"]["id"]


def test_filters_are_switched_off_by_their_thresholds():
    items = [T.Item(chat(s, roles=("user",)), "chat", 0, i, str(i)) for i, s in enumerate(
        ["Where is the station in this city?", "I have no time for this work today.",
         "My brother bought a new red car yesterday."])]  # fmt: skip
    fake = Fake()
    loose = DataTranslateConfig(tgt="hu", min_script_ratio=0, language_id=False, min_round_trip_chrf=0)
    results = T.translate_items(items, lambda t: fake(t, "en", "hu"), lambda t: fake(t, "hu", "en"), loose)
    assert [r["status"] for r in results] == ["kept"] * 3
    assert results[2]["round_trip_chrf"] < 30 and results[0]["round_trip_chrf"] is not None


# ------------------------------------------------------------------------------------------- resume


def resume_inputs(tmp_path: Path, en_texts: list[str], hu_texts: list[str]) -> list[str]:
    sentences = [s.strip() for t in en_texts for s in t.split(".") if 20 < len(s.strip()) < 70][:40]
    items = [chat(f"{s}.", f"Use {{name}} and `code` here: {s[:20]}." if i % 2 else s[:30])
             for i, s in enumerate(sentences)]  # fmt: skip
    data = write_jsonl(tmp_path / "chat.jsonl", items)
    pairs = [{"en": en_texts[i].split(".")[0][:60] or "x", "hu": hu_texts[i].split(".")[0][:60] or "y"}
             for i in range(20)]  # fmt: skip
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    return ["data", "translate", "--input", str(data), "--pairs", str(pairs), "--tgt", "hu", "--shots", "2",
            "--batch-size", "2", "--device", "cpu", "--no-bf16", "--no-language-id", "--min-script-ratio", "0",
            "--min-round-trip-chrf", "0", "--min-length-ratio", "0", "--max-length-ratio", "1000"]  # fmt: skip


def outputs(out: Path) -> dict[str, str]:
    summary = tiny.read_json(out / T.SUMMARY)
    for key in ("translate_seconds", "items_per_second"):
        summary.pop(key)
    files = {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*.jsonl"))}
    return {**files, "summary": json.dumps(summary, sort_keys=True)}


def test_a_run_killed_halfway_and_rerun_equals_an_uninterrupted_run(tmp_path, tiny_tied, en_texts, hu_texts):
    argv = [*resume_inputs(tmp_path, en_texts, hu_texts), "--translator", str(tiny_tied)]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "langadapt.cli", *argv, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    progress = killed.with_name(".killed.partial") / T.PROGRESS
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        lines = sum(p.read_text().count("\n") for p in progress.glob("part-*.jsonl")) if progress.is_dir() else 0
        if lines >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished (or failed) before it could be killed"
    assert not killed.exists()
    written = sum(p.read_text().count("\n") for p in progress.glob("part-*.jsonl"))
    assert 6 <= written < 40
    main([*argv, "--out", str(killed)])  # resumes
    main([*argv, "--out", str(tmp_path / "straight")])
    assert outputs(killed) == outputs(tmp_path / "straight")
    assert not (killed / T.PROGRESS).exists()
    kept, rejects = read_jsonl(killed / T.TRANSLATED / "chat.jsonl"), read_jsonl(killed / T.REJECTS)
    assert len(kept) + len(rejects) == 40  # a random model's outputs are mostly dropped, with what it wrote
    assert all(r["reason"] in T.REASONS and r["translation"]["messages"] for r in rejects)


# -------------------------------------------------------------------------------- other translators


def tiny_marian(out: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                          forced_eos_token_id=tok.eos_token_id)  # fmt: skip
    MarianMTModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_seq2seq_translator_batches_without_moving_an_output(tmp_path, bytelevel_tok, en_texts):
    from langadapt.config import DataTranslateConfig

    folder = tiny_marian(tmp_path / "marian", bytelevel_tok)
    assert translators.translator_kind(folder, "auto") == "seq2seq"
    texts = [en_texts[i][: 15 + 9 * i] for i in range(5)]
    one = translators.load_translator(folder, DataTranslateConfig(tgt="hu", batch_size=1), {}, "cpu", False)
    four = translators.load_translator(folder, DataTranslateConfig(tgt="hu", batch_size=4), {}, "cpu", False)
    assert one(texts, "en", "hu") == four(texts, "en", "hu")
    data = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Say hello {name}.", "chosen": "Hello {name}!",
                                                   "rejected": "No."}] * 2 + [{"prompt": "Hi", "chosen": "Hey",
                                                                              "rejected": "Go"}])  # fmt: skip
    main(["data", "translate", "--input", str(data), "--translator", str(folder), "--tgt", "hu", "--device", "cpu",
          "--out", str(tmp_path / "out")])  # fmt: skip
    summary = tiny.read_json(tmp_path / "out" / T.SUMMARY)
    assert summary["items"] == 3 and summary["kept"] + sum(summary["dropped"].values()) == 3
    assert summary["translator"]["kind"] == "seq2seq" and summary["dropped"]["duplicate"] == 1


def test_a_causal_translator_with_the_chat_prompt(tmp_path, tiny_tied):
    data = write_jsonl(tmp_path / "chat.jsonl", [chat("Good morning.", "How are you?")])
    main(["data", "translate", "--input", str(data), "--translator", str(tiny_tied), "--tgt", "hu",
          "--prompt", "chat", "--max-new-tokens-extra", "2", "--device", "cpu",
          "--out", str(tmp_path / "out")])  # fmt: skip
    record = tiny.read_json(tmp_path / "out" / "stage.json")
    assert record["items"] == 1 and record["kept"] + sum(record["dropped"].values()) == 1
    assert tiny.read_json(tmp_path / "out" / T.SUMMARY)["translator"]["prompt"] == "chat"


# ---------------------------------------------------------------------------------------- bad input


def bad_cases(tmp_path: Path, tiny_tied: Path) -> dict:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "README.md").write_text("weights coming soon\n")
    ok = [chat("Hello there.")]
    return {
        "chat without messages": ([{"text": "Hello"}], ["--kind", "chat"], "data.jsonl", "line 1 has no 'messages'"),
        "neither kind": ([{"text": "Hello"}], [], "data.jsonl", "line 1 is neither chat data"),
        "preference without chosen": ([{"prompt": "a", "chosen": "b", "rejected": "c"},
                                       {"prompt": "a", "rejected": "c"}], [], "data.jsonl", "line 2 has no 'chosen'"),
        "a translator that is not a model": (ok, ["--translator", str(not_a_model)], "not-a-model",
                                             "not a Hugging Face model folder"),
        "a ratio outside [0, 1]": (ok, ["--min-script-ratio", "1.5"], "", "min_script_ratio must be in [0, 1]"),
        "few-shot without pairs": (ok, [], "", "needs --pairs"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["chat without messages", "neither kind", "preference without chosen",
                                  "a translator that is not a model", "a ratio outside [0, 1]",
                                  "few-shot without pairs"])  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, tiny_tied, capsys):
    records, extra, names, message = bad_cases(tmp_path, tiny_tied)[case]
    data = write_jsonl(tmp_path / "data.jsonl", records)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["data", "translate", "--input", str(data), "--translator", str(tiny_tied), "--tgt", "hu",
            "--device", "cpu", *extra, "--out", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and names in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
