"""``eval speed``: how many words per second each model generates, in transformers and in llama.cpp.

A vocabulary extension's practical promise is fewer decoding steps per word: a model that spends 1.87
tokens on a Hungarian word instead of 4.24 should write Hungarian ~2.3x faster. This stage measures what
each runtime makes of that, with nothing but the tokenizer and the model changing between the models:

* **The same work for every model.** The prompts are the first ``prompt_words`` whitespace words of the
  first held-out documents of each language (target and English), read after the document-start token
  as every eval stage reads text. Every model continues every prompt greedily, EOS and every other
  special token banned (a model may not stop early), until the continuation holds ``words`` complete
  words: :func:`continuation_done`, words counted as tokens-per-word counts them (whitespace words of the
  prompt and its continuation, decoded together, minus the prompt's), a word being complete once
  whitespace follows it. So every model and runtime writes the same number of words, each in as many
  tokens as its tokenizer and its greedy choices take. A prompt some model does not complete within
  ``max_tokens_per_word`` x ``words`` tokens (a loop inside one endless word) is left out of every
  model's figures in that runtime (:func:`summarise_all`).
* **Timing.** Batch size 1 with a KV cache, ``threads`` CPU threads for both runtimes, one untimed
  warm-up generation per model and runtime, then each prompt timed ``repeats`` times (the fastest
  counts). The timed span is one generation call (prompt prefill and decoding); the stop rule's own
  decoding is timed separately and subtracted, so only generation is timed. words/s = words / seconds
  summed over a language's prompts.
* **Runtimes.** transformers: ``model.generate`` (greedy, ``suppress_tokens`` for the banned ids, a
  stopping criterion for the word count). llama.cpp: :class:`langadapt.llamacpp.session.LlamaCppModel`
  on a GGUF per model (``gguf``; by default each model converted to a temporary f16 GGUF in the work
  folder with llama.cpp's converter, deleted afterwards). Both are fed the HF tokenizer's prompt ids and
  their outputs decoded by it, so the stop rule is the same code on both; llama.cpp's own tokenization of
  every prompt is compared with those ids and recorded. Without a runtime or a converter the llama.cpp
  part is skipped and the reason recorded.
* **Held-out text** (the ``-text`` rows): free generation measures what a model chooses to write too, and
  a model that loops in its own text can spend more steps per word than on real text. So each runtime
  also decodes every prompt's own document continuation (the next ``words`` words) token by token, with
  the same per-step work as generating (:func:`measure_text`): the same text for every model, only the
  tokenizer and the cost of a step differ. This is the extension's promise measured apart from the
  model's quality.
* **Next to the speed:** tokens per word of the held-out text (each model's tokenizer, the same
  documents) and of each model's own generated text, and the decoding steps it took per word.
* **Per runtime, language and model after the first** (:func:`compare`): ratio = its words/s ÷ the
  first model's; limit = the first model's held-out tokens/word ÷ its own (the gain fewer steps could
  give if a step cost the same); closeness = ratio ÷ limit (1.0: the whole fertility gain arrives as
  speed; below: a step costs more, e.g. the larger output layer, or the model took more steps per word
  in its own text than on held-out text). ``steps_limit`` and ``steps_closeness`` do the same with the
  decoding steps each model actually took per generated word.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import SpeedConfig
from langadapt.corpus.readers import read_heldout
from langadapt.errors import UserError
from langadapt.eval.common import RESULTS_JSON, each_model
from langadapt.models import load_tokenizer
from langadapt.runs import write_json_atomic
from langadapt.runtime import load_model
from langadapt.tokenizer.document import document_start
from langadapt.tokenizer.metrics import fertility

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_DOCS_READ = 200
"""Held-out documents read per corpus when looking for prompts."""
CORPORA = ("target", "english")
RUNTIMES = {"transformers": "transformers", "llamacpp": "llama.cpp",
            "transformers-text": "transformers, held-out text", "llamacpp-text": "llama.cpp, held-out text"}
"""Measurement keys and the names the records and the report print: each runtime writing its own text
(the config's runtime keys), and the same runtime decoding the held-out text (``-text``, :func:`measure_text`)."""
TEXT = "-text"
GGUF_OUTTYPE = "f16"
"""A converted GGUF's type: the precision people run small models in, and one export verifies at 0.5% bpb."""
_WORD = re.compile(r"\S+")


# --------------------------------------------------------------------------------------- stop rule


def count_words(text: str) -> int:
    """Whitespace words, as tokens per word counts them (:mod:`langadapt.tokenizer.metrics`)."""
    return len(text.split())


def continuation_done(text: str, prompt_words: int, words: int) -> bool:
    """Whether ``text`` (a prompt of ``prompt_words`` words and its continuation, decoded together) holds
    ``words`` complete words after the prompt: more than that many have begun, or exactly that many and
    whitespace after the last (a word may still grow until then)."""
    after = count_words(text) - prompt_words
    return after > words or (after == words and text[-1:].isspace())


def first_words(text: str, prompt_words: int, words: int) -> str:
    """The continuation of ``text`` after its first ``prompt_words`` words, up to the end of the next
    ``words`` words (what a stopped continuation holds, without the start of the word after them)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= prompt_words:
        return ""
    start = spans[prompt_words - 1][1] if prompt_words else 0
    end = spans[min(prompt_words + words, len(spans)) - 1][1]
    return text[start:end]


class WordStop:
    """The stop rule of one generation, as the runtimes call it: ``stop(new_ids)`` after every token. It
    decodes the prompt and the new ids together (a SentencePiece decoder drops the first space of a text
    decoded alone) and keeps the seconds it spent, which the timing subtracts."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: list[int], words: int) -> None:
        self.decode, self.prompt_ids, self.words = decode, list(prompt_ids), words
        self.prompt_text = decode(self.prompt_ids)
        self.prompt_words = count_words(self.prompt_text)
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.calls = 0

    def __call__(self, new_ids: list[int]) -> bool:
        started, cpu = time.perf_counter(), time.process_time()
        done = continuation_done(self.decode(self.prompt_ids + list(new_ids)), self.prompt_words, self.words)
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        self.calls += 1
        return done

    def result(self, new_ids: list[int]) -> tuple[str, int]:
        """(the continuation cut after its ``words`` words, how many complete words it holds)."""
        text = self.decode(self.prompt_ids + list(new_ids))
        after = count_words(text) - self.prompt_words
        # the last word is complete only when whitespace follows it (a capped one may be cut mid-word)
        complete = min(max(after if text[-1:].isspace() else after - 1, 0), self.words)
        return first_words(text, self.prompt_words, complete), complete


def banned_ids(tokenizer: PreTrainedTokenizerBase, rows: int) -> list[int]:
    """Ids no continuation may use: every special token (EOS: a model may not end early; the others are no
    text) and the padding rows past the tokenizer (``rows``: the model's vocabulary rows)."""
    specials = set(tokenizer.all_special_ids)
    specials |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    return sorted(specials | set(range(len(tokenizer), rows)))


# ---------------------------------------------------------------------------------------- prompts


def openings(docs: list[str], n: int, prompt_words: int, words: int) -> list[tuple[str, str]]:
    """(prompt, reference) of the first ``n`` documents holding more than ``prompt_words`` words: the first
    ``prompt_words`` words, and the document's own continuation after them, up to ``words`` words (with the
    whitespace that precedes it, so that prompt + reference is the document's text)."""
    out = []
    for doc in docs:
        spans = [m.span() for m in _WORD.finditer(doc)]
        if len(spans) > prompt_words:
            out.append((" ".join(doc[a:b] for a, b in spans[:prompt_words]), first_words(doc, prompt_words, words)))
        if len(out) == n:
            break
    return out


def collect_prompts(cfg: SpeedConfig, texts: dict[str, list[str]]) -> list[dict[str, str]]:
    """``per_language`` prompts of each held-out corpus, ``{"corpus", "lang", "prompt"}`` each."""
    prompts = []
    for corpus in CORPORA:
        if corpus not in texts:
            continue
        found = openings(texts[corpus], cfg.per_language, cfg.prompt_words, cfg.words)
        if not found:
            files = cfg.target if corpus == "target" else cfg.english
            raise UserError(f"no held-out document of more than {cfg.prompt_words} words to take a prompt from",
                            files[0])  # fmt: skip
        lang = (cfg.tgt or "target") if corpus == "target" else "en"
        prompts += [{"corpus": corpus, "lang": lang, "prompt": p, "reference": r} for p, r in found]
    return prompts


# ------------------------------------------------------------------------------------- generation


@dataclass
class Generated:
    """One timed continuation."""

    tokens: int
    words: int
    seconds: float
    output: str
    capped: bool
    new_ids: list[int] = field(repr=False, default_factory=list)
    cpu_seconds: float = 0.0
    """This process's CPU time (every thread) for the same span."""


Generate = Callable[[list[int], int, list[int], WordStop], list[int]]
"""``(prompt ids, max new tokens, banned ids, stop) -> new ids``: one runtime's greedy generation."""


def timed(generate: Generate, prompt_ids: list[int], cap: int, banned: list[int], words: int,
          decode: Callable[[list[int]], str]) -> Generated:  # fmt: skip
    """One generation timed, on both clocks: the call's seconds minus the stop rule's."""
    stop = WordStop(decode, prompt_ids, words)
    started, cpu = time.perf_counter(), time.process_time()
    new_ids = generate(prompt_ids, cap, banned, stop)
    seconds = time.perf_counter() - started - stop.seconds
    cpu_seconds = time.process_time() - cpu - stop.cpu_seconds
    output, complete = stop.result(new_ids)
    return Generated(len(new_ids), complete, seconds, output, complete < words, list(new_ids), cpu_seconds)


def hf_generator(model: Any, pad_id: int) -> Generate:
    """transformers' greedy ``generate`` with a KV cache, the banned ids suppressed, stopped by the rule
    (in the model's own dtype)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from langadapt.runtime import model_device

    device = model_device(model)

    class Words(StoppingCriteria):
        def __init__(self, stop: WordStop, start: int) -> None:
            self.stop, self.start = stop, start

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = self.stop(input_ids[0, self.start :].tolist())
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def generate(prompt_ids: list[int], cap: int, banned: list[int], stop: WordStop) -> list[int]:
        ids = torch.tensor([prompt_ids], device=device)
        # plain greedy whatever generation_config.json says (repetition_penalty=1.0: llama.cpp's side has none)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=cap, suppress_tokens=banned, pad_token_id=pad_id,
                                 stopping_criteria=StoppingCriteriaList([Words(stop, len(prompt_ids))]),
                                 temperature=None, top_p=None, top_k=None,
                                 repetition_penalty=1.0)  # fmt: skip
        return out[0, len(prompt_ids) :].tolist()

    return generate


def llama_generator(llm: Any) -> Generate:
    """llama.cpp's greedy generation (KV cache) through the session, banned ids and the stop rule."""

    def generate(prompt_ids: list[int], cap: int, banned: list[int], stop: WordStop) -> list[int]:
        return list(llm.generate(prompt_ids, cap, banned=banned, stop=stop))

    return generate


def measure(generate: Generate, prompts: list[dict[str, Any]], cfg: SpeedConfig, banned: list[int],
            decode: Callable[[list[int]], str], tokenizer: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Every prompt's continuation, after one untimed warm-up generation; the fastest of ``repeats``. Each
    output's own tokens (re-tokenized, as held-out text is) are counted for its tokens per word."""
    cap = math.ceil(cfg.words * cfg.max_tokens_per_word)
    timed(generate, prompts[0]["ids"], cap, banned, cfg.words, decode)  # warm-up: allocations, page-ins
    out = []
    for i, p in enumerate(prompts):
        runs = [timed(generate, p["ids"], cap, banned, cfg.words, decode) for _ in range(cfg.repeats)]
        best = min(runs, key=lambda g: clocked(cfg, g.seconds, g.cpu_seconds))
        out.append({"prompt": i, "corpus": p["corpus"], "tokens": best.tokens, "words": best.words,
                    "seconds": clocked(cfg, best.seconds, best.cpu_seconds),
                    "wall_seconds": best.seconds, "cpu_seconds": best.cpu_seconds,
                    "capped": best.capped, "output": best.output,
                    "output_tokens": fertility(tokenizer, [best.output])["tokens"],
                    "same_tokens_every_repeat": all(r.new_ids == best.new_ids for r in runs)})  # fmt: skip
    return out


def clocked(cfg: SpeedConfig, wall: float, cpu: float) -> float:
    """The seconds ``cfg.clock`` counts: elapsed (wall) or this process's CPU time."""
    return cpu if cfg.clock == "cpu" else wall


Follow = Callable[[list[int], list[int]], int]
"""``(prompt ids, reference ids) -> agreed``: one runtime decoding a given continuation token by token with a
KV cache (each step a forward pass of one token and the argmax of its logits, as when generating, but the
next token fed is the reference's); returns how many steps' argmax was the reference token."""


def hf_follower(model: Any) -> Follow:
    """transformers decoding a given continuation: a prefill of the prompt, then one token per step."""
    import torch

    from langadapt.runtime import cache_key, model_device

    device, key = model_device(model), cache_key(model)

    def follow(prompt_ids: list[int], reference: list[int]) -> int:
        agreed = 0
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True, logits_to_keep=1)
            for token in reference:
                agreed += int(out.logits[0, -1].argmax()) == token
                step = torch.tensor([[token]], device=device)
                out = model(input_ids=step, use_cache=True, logits_to_keep=1, **{key: out[key]})
        return agreed

    return follow


def llama_follower(llm: Any) -> Follow:
    """llama.cpp decoding a given continuation through the session (:meth:`LlamaCppModel.follow`)."""
    return lambda prompt_ids, reference: llm.follow(prompt_ids, reference)


def measure_text(follow: Follow, prompts: list[dict[str, Any]], cfg: SpeedConfig) -> list[dict[str, Any]]:
    """Every prompt's held-out continuation (the document's next ``words`` words, the same text for every
    model) decoded by the runtime, after one untimed warm-up: the decoding work of writing that text, each
    model in as many steps as its tokenizer cuts it into, whatever the model would have chosen. What the
    extension promises, measured apart from how well a model writes (a looping model's own text can take
    more steps per word than held-out text)."""
    follow(prompts[0]["ids"], prompts[0]["reference_ids"])  # warm-up
    out = []
    for i, p in enumerate(prompts):
        runs = []
        for _ in range(cfg.repeats):
            started, cpu = time.perf_counter(), time.process_time()
            agreed = follow(p["ids"], p["reference_ids"])
            runs.append((time.perf_counter() - started, time.process_time() - cpu, agreed))
        wall, cpu, agreed = min(runs, key=lambda r: clocked(cfg, r[0], r[1]))
        tokens = len(p["reference_ids"])
        out.append({"prompt": i, "corpus": p["corpus"], "tokens": tokens, "words": count_words(p["reference"]),
                    "seconds": clocked(cfg, wall, cpu), "wall_seconds": wall, "cpu_seconds": cpu, "capped": False,
                    "output": p["reference"], "output_tokens": tokens, "argmax_agreed": agreed})  # fmt: skip
    return out


def summarise(samples: list[dict[str, Any]], corpus: str, left_out: set[int]) -> dict[str, Any]:
    """One model's figures on one language in one runtime, over its prompts but ``left_out`` (those a
    model of the comparison did not complete): words/s, tokens/s, decoding steps per word and tokens per
    word of the generated text."""
    mine = [s for s in samples if s["corpus"] == corpus and s["prompt"] not in left_out]
    words, tokens, seconds = (sum(s[k] for s in mine) for k in ("words", "tokens", "seconds"))
    text_tokens = sum(s["output_tokens"] for s in mine)
    return {"prompts": len(mine), "left_out": sum(s["corpus"] == corpus for s in samples) - len(mine),
            "words": words, "tokens": tokens, "seconds": seconds,
            "words_per_s": words / seconds if seconds else None, "tokens_per_s": tokens / seconds if seconds else None,
            "steps_per_word": tokens / words if words else None,
            "generated_tokens_per_word": round(text_tokens / words, 4) if words else None,
            "capped": sum(s["capped"] for s in samples if s["corpus"] == corpus)}  # fmt: skip


def summarise_all(models: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each model's per-runtime, per-language figures (``runtimes``), over the prompts every model measured
    in that runtime completed: a continuation stopped by the cap (a loop inside one endless word) has no
    words/s to compare, and leaving its prompt out for every model keeps the prompts the same. Returns the
    prompts left out per runtime."""
    left_out = {}
    for runtime in RUNTIMES:
        measured = [m for m in models if runtime in m["samples"]]
        left_out[runtime] = sorted({s["prompt"] for m in measured for s in m["samples"][runtime] if s["capped"]})
        for m in measured:
            corpora = dict.fromkeys(s["corpus"] for s in m["samples"][runtime])
            m["runtimes"][runtime] = {c: summarise(m["samples"][runtime], c, set(left_out[runtime])) for c in corpora}
    return {k: v for k, v in left_out.items() if v}


# ------------------------------------------------------------------------------------ comparisons


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    return a / b if a is not None and b else None


def compare(first: dict[str, Any], other: dict[str, Any], first_heldout: float | None,
            other_heldout: float | None) -> dict[str, Any]:  # fmt: skip
    """``other`` against ``first`` in one runtime and language (module doc): speed ratio, the fertility
    limit and how close the ratio gets, and the same for the decoding steps actually taken."""
    speed = ratio(other["words_per_s"], first["words_per_s"])
    limit = ratio(first_heldout, other_heldout)
    steps_limit = ratio(first["steps_per_word"], other["steps_per_word"])
    return {"ratio": speed, "limit": limit, "closeness": ratio(speed, limit),
            "steps_limit": steps_limit, "steps_closeness": ratio(speed, steps_limit),
            "tokens_per_s_ratio": ratio(other["tokens_per_s"], first["tokens_per_s"])}


def comparisons(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`compare` of every model after the first, per runtime and language both were measured in."""
    if len(models) < 2:
        return []
    first, out = models[0], []
    for runtime in RUNTIMES:
        for corpus in CORPORA:
            a = first.get("runtimes", {}).get(runtime, {}).get(corpus)
            for m in models[1:]:
                b = m.get("runtimes", {}).get(runtime, {}).get(corpus)
                if not a or not b:
                    continue
                held_a = first["heldout"].get(corpus, {}).get("tokens_per_word")
                held_b = m["heldout"].get(corpus, {}).get("tokens_per_word")
                out.append({"runtime": runtime, "corpus": corpus, "label": m["label"], "vs": first["label"],
                            **compare(a, b, held_a, held_b)})  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------- threads


def cpu_threads(threads: int | None) -> int:
    """``threads``, or every core this process may run on."""
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------- llama.cpp


class LlamaCpp:
    """The llama.cpp side of the stage: the runtime (found once), and each model's GGUF (given, or
    converted into the work folder and deleted after use). ``reason`` says why it is skipped, when it is."""

    def __init__(self, cfg: SpeedConfig, work: Path) -> None:
        self.cfg, self.work = cfg, work
        self.runtime: Any = None
        self.reason: str | None = None
        self.info: dict[str, Any] = {}
        if "llamacpp" not in cfg.runtimes:
            self.reason = "not asked for (runtimes)"
            return
        for path in cfg.gguf:  # a GGUF named but missing is bad input, not a reason to skip
            if not Path(path).is_file():
                raise UserError("no such GGUF file (gguf: one per model)", path)
        from langadapt.llamacpp.session import find_runtime

        self.runtime, reason = find_runtime(cfg.llama_lib, llama_cpp=cfg.llama_cpp)
        if self.runtime is None:
            self.reason = reason
            return
        self.info = {"source": str(self.runtime.source), "missing_symbols": list(self.runtime.missing_symbols)}

    @property
    def available(self) -> bool:
        return self.runtime is not None and self.reason is None

    @contextlib.contextmanager
    def gguf(self, index: int, label: str, model_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The GGUF of model ``index``: the given one, or a temporary f16 conversion (removed on exit)."""
        if self.cfg.gguf:
            yield Path(self.cfg.gguf[index]), {"gguf": str(self.cfg.gguf[index]), "converted": False}
            return
        from langadapt.llamacpp.convert import convert
        from langadapt.llamacpp.sources import find_llama_cpp

        folder = self.work / "gguf"
        out = folder / f"{index}-{re.sub(r'[^A-Za-z0-9._-]', '_', label)}.gguf"
        scratch = folder / f"{index}-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            convert(find_llama_cpp(self.cfg.llama_cpp), Path(model_dir), out, GGUF_OUTTYPE, scratch=scratch,
                    log=folder / f"{index}-convert.log")  # fmt: skip
            yield out, {"gguf": f"{GGUF_OUTTYPE} conversion (temporary)", "converted": True,
                        "convert_seconds": round(time.perf_counter() - started, 2),
                        "gguf_bytes": out.stat().st_size}  # fmt: skip
        finally:  # a GGUF is as large as the model: not kept in the run
            out.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)

    def open(self, gguf: Path, n_ctx: int, threads: int) -> Any:
        from langadapt.llamacpp.session import LlamaCppModel

        return LlamaCppModel(gguf, self.runtime, n_ctx=n_ctx, n_threads=threads)


# ----------------------------------------------------------------------------------------- stage


def evaluate_speed(cfg: SpeedConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval speed``): every model continues the same prompts to the same number of words in
    each runtime; write ``out/results.json`` (module doc) and return the comparisons."""
    models = each_model(cfg, "eval speed")
    if cfg.gguf and len(cfg.gguf) != len(models.names):
        raise UserError(f"gguf needs one file per model ({len(models.names)}), not {len(cfg.gguf)}")
    # one read for both uses: the prompts come from the first MAX_DOCS_READ documents, the fertility
    # beside the speed from the first heldout_docs
    most = None if cfg.heldout_docs is None else max(MAX_DOCS_READ, cfg.heldout_docs)
    docs = read_heldout({"target": cfg.target, "english": cfg.english}, most, cfg.text_field)
    if not docs:
        raise UserError("eval speed needs held-out text (--target and/or --english)")
    heldout = {c: texts[: cfg.heldout_docs] for c, texts in docs.items()}
    prompts = collect_prompts(cfg, {c: texts[:MAX_DOCS_READ] for c, texts in docs.items()})
    models.resolve()
    threads = cpu_threads(cfg.threads)
    llama = LlamaCpp(cfg, Path(out))
    results = []
    with torch_threads(threads):
        for index, (name, path, label) in enumerate(zip(models.names, models.paths, models.labels)):
            results.append(_one_model(cfg, index, name, path, label, prompts, heldout, models, llama, threads))
            gc.collect()
    llama_status = {"status": "measured" if llama.available else "skipped", "reason": llama.reason, **llama.info}
    for m in results:
        if llama.available and "llamacpp" not in m["samples"]:
            llama_status = {**llama_status, "status": "partly measured"}
    left_out = summarise_all(results)
    compared = comparisons(results)
    settings = {
        "words": cfg.words, "prompt_words": cfg.prompt_words, "per_language": cfg.per_language, "clock": cfg.clock,
        "max_new_tokens": math.ceil(cfg.words * cfg.max_tokens_per_word), "repeats": cfg.repeats,
        "threads": threads, "device": str(models.device), "batch_size": 1,
        "transformers_dtype": "bfloat16" if models.bf16 else "float32", "llamacpp_gguf": GGUF_OUTTYPE
        if not cfg.gguf else "as given",
        "generation": "greedy with a KV cache, batch size 1, EOS and every special token banned, after the "
                      "document-start token, until the continuation holds `words` complete whitespace words",
        "held_out_text": "the `-text` rows: each runtime decodes the prompt's document's own next `words` words "
                         "token by token (KV cache, a forward pass and an argmax per step, the reference token fed "
                         "next): the same text for every model, so only the tokenizer and the step cost differ",
        "timing": "one untimed warm-up generation per model and runtime; each prompt timed `repeats` times, the "
                  "fastest kept; the generation call only (prefill and decoding), the stop rule's decoding "
                  "subtracted; words/s = words / seconds summed over a language's prompts",
        "left_out": "prompts some model of the comparison did not complete (stopped by the token cap), left out "
                    "of every model's figures in that runtime",
        "limit": "first model's held-out tokens/word / this model's (fewer decoding steps at equal step cost)",
        "closeness": "ratio / limit",
    }  # fmt: skip
    write_json_atomic(Path(out) / RESULTS_JSON, {
        "settings": settings, "prompts": [{k: p[k] for k in ("corpus", "lang", "prompt", "reference")} for p in prompts],
        "runtimes": {"transformers": {"status": "measured" if "transformers" in cfg.runtimes else "skipped",
                                      "reason": None if "transformers" in cfg.runtimes else "not asked for (runtimes)",
                                      "device": str(models.device)},
                     "llamacpp": llama_status},
        "left_out": left_out, "models": results, "comparisons": compared,
    })  # fmt: skip
    return {"prompts": len(prompts), "threads": threads, "llamacpp": llama_status["status"],
            "comparisons": [{k: c[k] for k in ("runtime", "corpus", "label", "ratio", "limit", "closeness")}
                            for c in compared]}  # fmt: skip


def _one_model(cfg: SpeedConfig, index: int, name: str, path: Path, label: str, prompts: list[dict[str, str]],
               heldout: dict[str, list[str]], models: Any, llama: LlamaCpp, threads: int) -> dict[str, Any]:  # fmt: skip
    """One model: its held-out fertility, then its generations in each runtime asked for."""
    tokenizer = load_tokenizer(path)
    start = document_start(tokenizer)
    encoded = tokenizer([p["prompt"] for p in prompts], add_special_tokens=False)["input_ids"]
    mine = [{**p, "ids": [start.token_id, *ids], "reference_ids": reference_ids(tokenizer, p, ids)}
            for p, ids in zip(prompts, encoded)]  # fmt: skip

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    record: dict[str, Any] = {"label": label, "model": str(name),
                              "heldout": {c: fertility(tokenizer, docs) for c, docs in heldout.items()},
                              "runtimes": {}, "samples": {}}  # fmt: skip
    if "transformers" in cfg.runtimes:
        import torch

        # bf16 as weights, not autocast: autocast re-casts every weight at every decoding step, which at
        # batch size 1 costs more than the step itself; a bf16 inference model is loaded in bf16
        model = load_model(path, models.device, dtype=torch.bfloat16 if models.bf16 else torch.float32)
        model.eval()
        rows = model.get_output_embeddings().weight.shape[0]
        banned = banned_ids(tokenizer, rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start.token_id
        record["samples"]["transformers"] = measure(hf_generator(model, pad), mine, cfg, banned, decode, tokenizer)
        record["samples"]["transformers" + TEXT] = measure_text(hf_follower(model), mine, cfg)
        del model
        gc.collect()
    if llama.available:
        try:
            with llama.gguf(index, label, path) as (gguf, about):
                n_ctx = max(len(p["ids"]) for p in mine) + math.ceil(cfg.words * cfg.max_tokens_per_word) + 8
                with contextlib.closing(llama.open(gguf, n_ctx, threads)) as llm:
                    n_vocab = int(llm.n_vocab)
                    banned = banned_ids(tokenizer, max(n_vocab, len(tokenizer)))
                    own = [llm.tokenize(p["prompt"], add_special=False) for p in mine]
                    agree = sum(o == p["ids"][1:] for o, p in zip(own, mine))
                    samples = measure(llama_generator(llm), mine, cfg, banned, decode, tokenizer)
                    text_samples = measure_text(llama_follower(llm), mine, cfg)
            record["samples"]["llamacpp"] = samples
            record["samples"]["llamacpp" + TEXT] = text_samples
            record["llamacpp"] = {**about, "n_vocab": n_vocab,
                                  "prompts_tokenized_alike": f"{agree}/{len(mine)}"}  # fmt: skip
        except UserError as exc:  # no converter, or one that cannot convert this model: said, not fatal
            record["llamacpp"] = {"skipped": str(exc)}
    return record


def reference_ids(tokenizer: Any, prompt: dict[str, str], prompt_ids: list[int]) -> list[int]:
    """The held-out continuation's ids as the tokenizer cuts prompt + continuation together, after as many
    ids as the prompt alone takes: the steps writing the continuation after the prompt would take (encoded
    alone, a SentencePiece tokenizer would add a word-start piece the joint text does not have)."""
    both = tokenizer(prompt["prompt"] + prompt["reference"], add_special_tokens=False)["input_ids"]
    return both[len(prompt_ids) :]


# --------------------------------------------------------------------------------------- terminal


def print_speed(record: dict[str, Any], out: Path) -> None:
    """What ``eval speed`` prints: words/s and tokens/word per runtime, language and model, and the ratios."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    results = json.loads((Path(out) / RESULTS_JSON).read_text(encoding="utf-8"))
    s = results["settings"]
    console = Console()
    table = Table(title=escape(f"{out}: words per second, {s['words']} words after each prompt "
                               f"({s['threads']} threads, {s['device']})"))  # fmt: skip
    for column in ("runtime", "text", "model", "words/s", "tok/word", "steps/word", "ratio", "limit", "closeness"):
        table.add_column(column, justify="left" if column in ("runtime", "text", "model") else "right")
    by_key = {(c["runtime"], c["corpus"], c["label"]): c for c in results["comparisons"]}
    for runtime, name in RUNTIMES.items():
        for corpus in CORPORA:
            for m in results["models"]:
                got = m["runtimes"].get(runtime, {}).get(corpus)
                if not got:
                    continue
                c = by_key.get((runtime, corpus, m["label"]), {})
                table.add_row(name, corpus, escape(m["label"]), _fmt(got["words_per_s"], 1),
                              _fmt(m["heldout"][corpus]["tokens_per_word"], 3), _fmt(got["steps_per_word"], 3),
                              _fmt(c.get("ratio"), 2), _fmt(c.get("limit"), 2), _fmt(c.get("closeness"), 2))  # fmt: skip
    console.print(table)
    console.print("tok/word: tokens per word of the held-out text; steps/word: decoding steps per generated word")
    for runtime, left in (results.get("left_out") or {}).items():
        console.print(f"{RUNTIMES[runtime]}: {len(left)} prompt(s) left out for every model (a model's "
                      "continuation reached the token cap without completing its words)")  # fmt: skip
    status = results["runtimes"]["llamacpp"]
    if status.get("reason"):
        console.print(f"llama.cpp skipped: {escape(status['reason'])}")
    for m in results["models"]:
        if "skipped" in m.get("llamacpp", {}):
            console.print(f"llama.cpp skipped for {escape(m['label'])}: {escape(m['llamacpp']['skipped'])}")


def _fmt(value: float | None, decimals: int) -> str:
    return "—" if value is None else f"{value:.{decimals}f}"
