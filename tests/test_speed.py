"""``eval speed``: the stop rule gives every model the same number of complete words (different tokenizers,
different token counts), only generation is timed, the ratio / limit / closeness arithmetic, and the
llama.cpp path in a real runtime (the xllamacpp wheel's libllama; skipped with the reason when the fetch
fails), GGUFs converted into the work folder and removed."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import tiny

from langadapt.config import ConfigError, SpeedConfig
from langadapt.eval import speed as S

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = 6


# ------------------------------------------------------------------------------------------ stop rule


def test_a_word_counts_once_whitespace_follows_it():
    # prompt of 2 words; 'a few' is 2 words after it, but the second may still grow until a space comes
    assert not S.continuation_done("one two a few", 2, 2)
    assert S.continuation_done("one two a few ", 2, 2)
    assert S.continuation_done("one two a few m", 2, 2)  # the third word began: the second is complete
    assert not S.continuation_done("one twos", 2, 1)  # a suffix glued to the prompt is no new word
    assert S.first_words("one two a few more", 2, 2) == " a few"
    assert S.first_words("one twos a b", 2, 1) == " a"  # the glued suffix belongs to the prompt's word
    assert S.first_words("one two\n\nx\ty z", 2, 2) == "\n\nx\ty"


def test_the_stop_rule_stops_at_the_first_token_that_completes_the_words():
    pieces = ["<s>", " Egy", " mondat", "ocska", " és", " még", " egy", ".", " Vége"]  # a toy vocabulary

    def decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids if i)  # id 0 is a special token, dropped as skip_special_tokens

    stop = S.WordStop(decode, [0, 1], words=3)
    new = []
    for token in [2, 3, 4, 5, 6, 7, 8]:
        new.append(token)
        if stop(new):
            break
    # ' mondatocska' ' és' ' még' hold 3 words; ' még' is complete only once ' egy' begins
    assert new == [2, 3, 4, 5, 6] and stop.calls == 5 and stop.seconds > 0
    assert stop.result(new) == (" mondatocska és még", 3)
    assert stop.result([2, 3]) == ("", 0)  # capped: an unfinished word is not counted


def test_banned_ids_are_the_special_tokens_and_the_padding_rows(bytelevel_tok):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bytelevel_tok)
    banned = S.banned_ids(tok, len(tok) + 3)
    assert set(tok.all_special_ids) | {tok.eos_token_id} <= set(banned)
    assert banned[-3:] == [len(tok), len(tok) + 1, len(tok) + 2]
    assert not any((tok.convert_ids_to_tokens(i) or "").startswith("Ġ") for i in banned)  # no word is banned


# ---------------------------------------------------------------------------------------- arithmetic


def test_ratio_limit_and_closeness():
    base = {"words_per_s": 10.0, "steps_per_word": 4.0, "tokens_per_s": 40.0}
    adapted = {"words_per_s": 18.0, "steps_per_word": 2.0, "tokens_per_s": 36.0}
    c = S.compare(base, adapted, 4.24, 1.87)
    assert c["ratio"] == pytest.approx(1.8)
    assert c["limit"] == pytest.approx(4.24 / 1.87)  # the fertility ratio: ~2.27x
    assert c["closeness"] == pytest.approx(1.8 / (4.24 / 1.87))
    assert c["steps_limit"] == pytest.approx(2.0) and c["steps_closeness"] == pytest.approx(0.9)
    assert c["tokens_per_s_ratio"] == pytest.approx(0.9)  # a step costs 10% more: the bigger vocabulary
    assert S.compare({**base, "words_per_s": None}, adapted, 4.24, None)["ratio"] is None
    models = [{"label": "base", "heldout": {"target": {"tokens_per_word": 4.24}},
               "runtimes": {"transformers": {"target": base}, "llamacpp": {"target": base}}},
              {"label": "pretrain", "heldout": {"target": {"tokens_per_word": 1.87}},
               "runtimes": {"transformers": {"target": adapted}}}]  # fmt: skip
    compared = S.comparisons(models)  # llama.cpp measured the base only: no comparison there
    assert [(c["runtime"], c["corpus"], c["label"], c["vs"]) for c in compared] == [
        ("transformers", "target", "pretrain", "base")]
    assert compared[0]["closeness"] == pytest.approx(c["closeness"])


def test_a_prompt_a_model_did_not_complete_is_left_out_for_every_model():
    def sample(i: int, words: int, capped: bool, seconds: float = 1.0) -> dict:
        return {"prompt": i, "corpus": "target", "tokens": 2 * words, "words": words, "seconds": seconds,
                "capped": capped, "output_tokens": 2 * words}  # fmt: skip

    models = [{"label": "base", "runtimes": {}, "samples": {"llamacpp": [sample(0, 6, False), sample(1, 6, False)]}},
              {"label": "x", "runtimes": {}, "samples": {"llamacpp": [sample(0, 6, False), sample(1, 1, True, 5.0)],
                                                         "transformers": [sample(0, 6, False)]}}]  # fmt: skip
    assert S.summarise_all(models) == {"llamacpp": [1]}  # a loop inside one word: prompt 1, for both models
    for m in models:
        got = m["runtimes"]["llamacpp"]["target"]
        assert (got["prompts"], got["left_out"], got["words"], got["words_per_s"]) == (1, 1, 6, 6.0)
    assert models[1]["runtimes"]["llamacpp"]["target"]["capped"] == 1
    assert models[1]["runtimes"]["transformers"]["target"]["left_out"] == 0  # other runtimes keep it


def test_config_checks():
    with pytest.raises(ConfigError, match="runtimes"):
        SpeedConfig(runtimes=["vllm"])
    with pytest.raises(ConfigError, match="one file per model"):
        SpeedConfig(models=["a", "b"], gguf=["a.gguf"])
    with pytest.raises(ConfigError, match="words"):
        SpeedConfig(words=0)
    SpeedConfig(gguf=["a.gguf", "b.gguf"])  # a recipe fills the models in later


# -------------------------------------------------------------------------------- models that write words


def wordy(src: Path, out: Path, *, word_start: float = 3.0, inside: float = 0.3) -> Path:
    """A copy of a random tiny model whose output rows favour tokens that start a word (scaled by
    ``word_start``, the others by ``inside``), so greedy continuations are words, not one endless token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(src, out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    starts = torch.tensor([t[:1] in ("Ġ", "▁") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head[: len(tok)][starts] *= word_start
        head[: len(tok)][~starts] *= inside
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory, bytelevel_tok, metaspace_tok) -> list[Path]:
    """Two models with different tokenizers (byte-level; SentencePiece-style with byte fallback)."""
    d = tmp_path_factory.mktemp("speed-models")
    a = tiny.tiny_model(d / "a-raw", bytelevel_tok, tied=False)
    b = tiny.tiny_model(d / "b-raw", metaspace_tok, tied=False, extra_rows=5)
    # 'inside' high enough that some words take several tokens
    return [wordy(a, d / "base", inside=0.9), wordy(b, d / "other", inside=0.9)]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, hu_texts, en_texts) -> dict[str, str]:
    d = tmp_path_factory.mktemp("speed-heldout")
    return {"target": str(tiny.write_jsonl(d / "hu.jsonl", hu_texts[200:220])),
            "english": str(tiny.write_jsonl(d / "en.jsonl", en_texts[200:220]))}  # fmt: skip


def test_every_model_writes_the_same_number_of_words(tmp_path, two_tokenizers, heldout):
    from transformers import AutoTokenizer

    cfg = SpeedConfig(models=[str(m) for m in two_tokenizers], target=[heldout["target"]],
                      english=[heldout["english"]], tgt="hu", per_language=2, prompt_words=5, words=WORDS,
                      runtimes=["transformers"], threads=1, device="cpu")  # fmt: skip
    record = tiny.run_stage("speed", cfg, tmp_path / "speed")
    results = tiny.read_json(tmp_path / "speed" / "results.json")
    assert [p["corpus"] for p in results["prompts"]] == ["target", "target", "english", "english"]
    assert all(len(p["prompt"].split()) == 5 for p in results["prompts"])
    steps = {}
    for m in results["models"]:
        samples = m["samples"]["transformers"]
        assert [s["words"] for s in samples] == [WORDS] * 4 and not any(s["capped"] for s in samples)
        assert [S.count_words(s["output"]) for s in samples] == [WORDS] * 4
        assert all(s["same_tokens_every_repeat"] for s in samples)
        for corpus in ("target", "english"):
            got = m["runtimes"]["transformers"][corpus]
            assert got["words"] == 2 * WORDS and got["words_per_s"] == pytest.approx(got["words"] / got["seconds"], rel=1e-3)
            steps[m["label"], corpus] = got["steps_per_word"]
    assert steps[("base", "target")] != steps[("other", "target")]  # the same words, in other token counts
    assert results["runtimes"]["llamacpp"]["status"] == "skipped"
    assert [(c["runtime"], c["corpus"]) for c in results["comparisons"]] == [
        ("transformers", "target"), ("transformers", "english"),
        ("transformers-text", "target"), ("transformers-text", "english")]
    assert record["comparisons"][0]["ratio"] == results["comparisons"][0]["ratio"]
    # held-out text: every model decodes the same document continuation, each in its own tokenizer's steps
    texts = [[s["output"] for s in m["samples"]["transformers-text"]] for m in results["models"]]
    assert texts[0] == texts[1] == [p["reference"] for p in results["prompts"]]
    assert all(1 <= S.count_words(t) <= WORDS for t in texts[0])  # a document's next WORDS words (or fewer)
    for m, path in zip(results["models"], two_tokenizers):
        tok = AutoTokenizer.from_pretrained(path)
        for s, p in zip(m["samples"]["transformers-text"], results["prompts"]):
            ids = tok(p["prompt"] + p["reference"], add_special_tokens=False)["input_ids"]
            assert s["tokens"] == len(ids) - len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
            assert s["words"] == S.count_words(p["reference"]) and 0 <= s["argmax_agreed"] <= s["tokens"]
    steps_text = {m["label"]: m["runtimes"]["transformers-text"]["target"]["steps_per_word"] for m in results["models"]}
    assert steps_text["base"] != steps_text["other"]


def test_only_generation_is_timed_and_the_stop_is_minimal(two_tokenizers):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = two_tokenizers[1]  # SentencePiece-style: its decoder drops the first space of a text alone
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    prompt = [tok.eos_token_id, *tok("Ez egy rövid mondat", add_special_tokens=False)["input_ids"]]
    banned = S.banned_ids(tok, model.get_output_embeddings().weight.shape[0])

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    slow_calls = []

    def slow_decode(ids: list[int]) -> str:  # a stop rule that costs 20 ms a call must not count
        import time

        slow_calls.append(1)
        time.sleep(0.02)
        return decode(ids)

    import time

    started = time.perf_counter()
    got = S.timed(S.hf_generator(model, tok.eos_token_id), prompt, 200, banned, WORDS, slow_decode)
    wall = time.perf_counter() - started
    text = decode(prompt + got.new_ids)
    assert S.continuation_done(text, 4, WORDS) and not S.continuation_done(decode(prompt + got.new_ids[:-1]), 4, WORDS)
    assert got.words == WORDS and not set(got.new_ids) & set(banned)
    assert 0 < got.seconds <= wall - 0.02 * len(slow_calls)  # the stop rule's sleeps were subtracted


# -------------------------------------------------------------------------------------------- llama.cpp


class FakeLlama:
    """A stand-in for langadapt.llamacpp.session.LlamaCppModel (the runtime's API, transformers inside):
    its "GGUF" is a text file naming the model folder."""

    def __init__(self, gguf: Path, runtime: object, *, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(gguf).read_text().strip()
        self.model, self.tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
        self.n_vocab, self.n_ctx, self.closed = self.model.config.vocab_size, n_ctx, False

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tok(text, add_special_tokens=add_special)["input_ids"]

    def generate(self, ids, max_new_tokens, *, banned=(), stop=None) -> list[int]:
        import torch

        new: list[int] = []
        with torch.inference_mode():
            while len(new) < max_new_tokens:
                logits = self.model(input_ids=torch.tensor([[*ids, *new]])).logits[0, -1]
                logits[list(banned)] = -float("inf")
                new.append(int(logits.argmax()))
                if stop is not None and stop(new):
                    break
        return new

    def follow(self, ids, reference) -> int:
        import torch

        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([[*ids, *reference]])).logits[0]
        return sum(int(logits[len(ids) - 1 + i].argmax()) == t for i, t in enumerate(reference))

    def close(self) -> None:
        self.closed = True


def test_the_llama_cpp_side_against_a_stand_in(tmp_path, monkeypatch, two_tokenizers, heldout):
    """The llama.cpp plumbing without a runtime: GGUFs given per model, the same prompt ids, banned ids and
    stop rule, its own tokenization compared, and the comparisons made per runtime."""
    from langadapt.llamacpp import session

    monkeypatch.setattr(session, "find_runtime", lambda lib="", llama_cpp="": (type("R", (), {
        "source": "stand-in", "missing_symbols": []})(), ""))  # fmt: skip
    monkeypatch.setattr(session, "LlamaCppModel", FakeLlama)
    ggufs = [tiny.write_jsonl(tmp_path / f"{i}.gguf", []) for i in range(2)]
    for gguf, model in zip(ggufs, two_tokenizers):
        gguf.write_text(str(model))
    cfg = SpeedConfig(models=[str(m) for m in two_tokenizers], target=[heldout["target"]], english=[heldout["english"]],
                      per_language=1, prompt_words=5, words=WORDS, threads=1, device="cpu",
                      gguf=[str(g) for g in ggufs])  # fmt: skip
    tiny.run_stage("speed", cfg, tmp_path / "speed")
    results = tiny.read_json(tmp_path / "speed" / "results.json")
    assert results["runtimes"]["llamacpp"]["status"] == "measured"
    for m in results["models"]:
        assert m["llamacpp"]["prompts_tokenized_alike"] == "2/2" and not m["llamacpp"]["converted"]
        hf, llama = m["samples"]["transformers"], m["samples"]["llamacpp"]
        assert [s["words"] for s in llama] == [WORDS, WORDS]
        assert [s["output"] for s in llama] == [s["output"] for s in hf]  # the same greedy text, both sides
    assert {(c["runtime"], c["corpus"]) for c in results["comparisons"]} == {
        (r, c) for r in S.RUNTIMES for c in ("target", "english")}
    for m in results["models"]:  # the same reference steps, and the same argmax, in both runtimes
        hf, llama = m["samples"]["transformers-text"], m["samples"]["llamacpp-text"]
        assert [(s["tokens"], s["argmax_agreed"]) for s in hf] == [(s["tokens"], s["argmax_agreed"]) for s in llama]
    with pytest.raises(Exception, match="no such GGUF"):
        tiny.run_stage("speed", SpeedConfig(**{**cfg.__dict__, "gguf": ["/nope/a.gguf", "/nope/b.gguf"]}),
                       tmp_path / "again")  # fmt: skip


@pytest.fixture(scope="module")
def llama() -> dict[str, str]:
    from llamacpp_fixture import llama_cpp_dir, llama_lib

    return {"llama_cpp": str(llama_cpp_dir()), "llama_lib": str(llama_lib())}


@pytest.mark.slow  # two conversions by llama.cpp's converter of 128k-vocabulary models: ~1 min
def test_llama_cpp_writes_the_same_words_from_temporary_ggufs(tmp_path, llama, heldout, hu_texts, en_texts):
    from test_export import extended_model

    extended = extended_model("llama", hu_texts, en_texts)  # Llama-3's real tokenizer + 60 Hungarian tokens
    base = wordy(extended.parent / "base", tmp_path / "base")
    adapted = wordy(extended, tmp_path / "adapted")  # init's stage.json comes along: it names the base
    cfg = SpeedConfig(models=[str(base), str(adapted)], target=[heldout["target"]], english=[heldout["english"]],
                      per_language=1, prompt_words=5, words=WORDS, threads=1, device="cpu", **llama)  # fmt: skip
    out = tmp_path / "speed"
    tiny.run_stage("speed", cfg, out)
    results = tiny.read_json(out / "results.json")
    assert results["runtimes"]["llamacpp"]["status"] == "measured", [m.get("llamacpp") for m in results["models"]]
    for m in results["models"]:
        assert m["llamacpp"]["converted"] and m["llamacpp"]["prompts_tokenized_alike"] == "2/2", m["llamacpp"]
        for runtime in ("transformers", "llamacpp"):
            assert [s["words"] for s in m["samples"][runtime]] == [WORDS, WORDS], (m["label"], runtime)
    assert {(c["runtime"], c["corpus"]) for c in results["comparisons"]} == {
        (r, c) for r in S.RUNTIMES for c in ("target", "english")}
    assert not list(out.rglob("*.gguf"))  # the temporary conversions are gone
    assert all(math.isfinite(c["ratio"]) for c in results["comparisons"])
    assert json.loads((out / "stage.json").read_text())["llamacpp"] == "measured"
