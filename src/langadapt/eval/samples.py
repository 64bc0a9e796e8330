"""``eval samples``: what each model writes after a few fixed prompts, for a human to read (GitHub issue 10).

Numbers say how much a model changed; a few continuations say *how*: whether the adapted model writes
the target language, whether it loops, what it did to English. The prompts are fixed, so two runs (or
two models of one run) are read on the same text:

* **Prompts.** A ``prompts`` jsonl (``{"lang": ..., "prompt": ...}`` a line) when given; otherwise the
  opening of the first paragraphs of the held-out target and English text (``per_language`` of each, the
  first paragraph of each document that holds ``min_chars`` characters, cut back to a word boundary at
  ``prompt_chars``). Taken from held-out text, they work for any language with no list to maintain.
* **Generation.** Greedy, batched, after the document-start token, cut at the first newline or at
  ``max_new_tokens`` — :func:`langadapt.prompts.generate`, the same code the translation scores.
* **Per output:** the share of distinct bigrams of words and punctuation marks (1.0: no repetition; a
  looping model scores low) and whether the language identifier (py3langid, as the corpus stage uses
  it) finds the prompt's language.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from langadapt.config import SamplesConfig
from langadapt.corpus.readers import iter_json_records, read_heldout
from langadapt.corpus.scripts import langid_model
from langadapt.errors import UserError
from langadapt.eval.common import RESULTS_JSON, SAMPLES_JSONL, each_model
from langadapt.prompts import generate
from langadapt.runs import write_json_atomic, write_jsonl_atomic

MAX_DOCS_READ = 200
"""Held-out documents read per corpus when looking for prompts (the first few nearly always suffice)."""


def opening(text: str, min_chars: int, max_chars: int) -> str | None:
    """The start of the first paragraph of ``text`` holding ``min_chars`` characters, cut back to the last
    space before ``max_chars`` (unspaced scripts: at ``max_chars``); None when no paragraph is long enough."""
    for paragraph in text.split("\n\n"):
        paragraph = " ".join(paragraph.split())
        if len(paragraph) < min_chars:
            continue
        if len(paragraph) <= max_chars:
            return paragraph
        cut = paragraph[:max_chars]
        space = cut.rfind(" ")
        return cut[:space] if space >= min_chars // 2 else cut
    return None


def prompts_from_text(docs: list[str], lang: str, n: int, min_chars: int, max_chars: int) -> list[dict[str, str]]:
    """``n`` prompts in ``lang``: the openings (:func:`opening`) of the first documents that have one."""
    out = []
    for doc in docs:
        text = opening(doc, min_chars, max_chars)
        if text is not None:
            out.append({"lang": lang, "prompt": text})
        if len(out) == n:
            break
    return out


def read_prompts(path: str) -> list[dict[str, str]]:
    """A prompts jsonl: one ``{"lang", "prompt"}`` object a line."""
    prompts = []
    for line, record in iter_json_records(path):
        if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise UserError(f"line {line}: needs a non-empty string field 'prompt'", path)
        prompts.append({"lang": str(record.get("lang", "")), "prompt": record["prompt"]})
    if not prompts:
        raise UserError("no prompts in the file", path)
    return prompts


_UNITS = re.compile(r"\w+|[^\w\s]")
"""Words and single punctuation marks: what the bigrams of :func:`distinct_bigrams` are made of."""


def distinct_bigrams(text: str) -> float | None:
    """Distinct bigrams / bigrams of the words and punctuation marks of ``text`` (None under two).

    Punctuation counts as a unit of its own so that a loop inside one whitespace-separated string
    ("kijelölt-benkel-benkel-benkel", "0-0-0-0-0") scores as the loop it is, not as one word."""
    units = _UNITS.findall(text)
    pairs = list(itertools.pairwise(units))
    return len(set(pairs)) / len(pairs) if pairs else None


def answer_measures(text: str, langid: Any) -> dict[str, Any]:
    """What every generated answer is measured by (here and in ``eval chat``): its distinct bigrams and
    its language (``langid``: :func:`langadapt.corpus.scripts.langid_model`; None for an empty answer)."""
    return {"distinct_bigrams": distinct_bigrams(text), "output_lang": langid.classify(text)[0] if text.strip() else None}


def mean_distinct_bigrams(measures: list[dict[str, Any]]) -> float | None:
    """The mean of the answers' distinct bigrams (answers under two units left out; None when none is left)."""
    measured = [m["distinct_bigrams"] for m in measures if m["distinct_bigrams"] is not None]
    return sum(measured) / len(measured) if measured else None


def collect_prompts(cfg: SamplesConfig) -> list[dict[str, str]]:
    """The prompts of ``cfg``: its prompts file, else openings of its held-out text (module doc)."""
    if cfg.prompts:
        return read_prompts(cfg.prompts)
    texts = read_heldout({cfg.tgt or "target": cfg.target, "en": cfg.english}, MAX_DOCS_READ, cfg.text_field)
    if not texts:
        raise UserError("eval samples needs --prompts or held-out text (--target and/or --english)")
    prompts = []
    for lang, docs in texts.items():
        found = prompts_from_text(docs, lang, cfg.per_language, cfg.min_chars, cfg.prompt_chars)
        if not found:
            files = cfg.target if lang != "en" else cfg.english
            raise UserError(f"no paragraph of {cfg.min_chars}+ characters to take a prompt from", files[0])
        prompts += found
    return prompts


def generate_samples(cfg: SamplesConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval samples``): every model continues the same prompts; write ``out/results.json``
    (prompts, settings, each model's outputs with their measures) and ``out/samples.jsonl``."""
    models = each_model(cfg, "eval samples")
    prompts = collect_prompts(cfg)
    models.resolve()
    bf16, device = models.bf16, models.device
    langid = langid_model()
    results, records = [], []
    for m in models:
        texts = [p["prompt"] for p in prompts]
        generated = generate(m.model, m.tokenizer, texts, [cfg.max_new_tokens] * len(texts),
                             batch_size=cfg.batch_size, bf16=bf16)  # fmt: skip
        samples = []
        for p, (text, truncated) in zip(prompts, generated):
            output = text.rstrip()
            sample = {**p, "output": output, "truncated": truncated, **answer_measures(output, langid)}
            samples.append(sample)
            records.append({"model": m.label, **sample})
        results.append({"label": m.label, "model": str(m.name), "samples": samples,
                        "distinct_bigrams_mean": mean_distinct_bigrams(samples),
                        "prompt_language_share": sum(s["output_lang"] == s["lang"] for s in samples) / len(samples)})  # fmt: skip
    write_json_atomic(out / RESULTS_JSON, {
        "prompts": prompts, "max_new_tokens": cfg.max_new_tokens, "bf16": bf16, "device": str(device),
        "generation": "greedy after the document-start token, cut at the first newline or max_new_tokens",
        "measures": {"distinct_bigrams": "distinct bigrams / bigrams of the words and punctuation marks of the output",
                     "output_lang": "py3langid's language of the output",
                     "prompt_language_share": "outputs whose language is the prompt's"},
        "models": results,
    })  # fmt: skip
    write_jsonl_atomic(out / SAMPLES_JSONL, records)
    return {"prompts": len(prompts), "models": {r["label"]: {k: r[k] for k in ("distinct_bigrams_mean",
            "prompt_language_share")} for r in results}}  # fmt: skip


def print_samples(record: dict[str, Any], out: Path) -> None:
    """What ``eval samples`` prints: each prompt, then every model's continuation."""
    from rich.console import Console
    from rich.markup import escape

    results = json.loads((Path(out) / RESULTS_JSON).read_text(encoding="utf-8"))
    console = Console()
    for i, p in enumerate(results["prompts"]):
        tag = escape(f"[{p['lang']}]")
        console.print(f"[bold]{tag} {escape(p['prompt'])}[/bold]")
        for m in results["models"]:
            console.print(f"  {m['label']:>10}: {escape(m['samples'][i]['output'])}")
    for m in results["models"]:
        mean = m["distinct_bigrams_mean"]
        console.print(f"{m['label']}: distinct bigrams {'-' if mean is None else f'{mean:.2f}'}, "
                      f"in the prompt's language {m['prompt_language_share']:.0%}")  # fmt: skip
