"""``eval chat``: what alignment changed, through each model's own chat template (GitHub issue 11).

Four measures per model, on held-out material only, each read through the model's chat template
(``apply_chat_template``; a model without one is an error: ``train sft`` gives it one):

* **Preferences.** For each held-out (prompt, chosen, rejected): the summed log-probability of the chosen
  and of the rejected assistant turn after the rendered prompt (split as :mod:`langadapt.eval.choice`
  splits a context and its continuation). Preference accuracy = share where chosen > rejected; margin =
  mean (chosen − rejected) in nats. DPO's reward margin is β × (this margin − the reference's).
* **Chat translation.** "Translate into {lang}: {text}" as a user turn, greedy to the end-of-turn token,
  scored with sacrebleu (chrF++ headline, chrF, BLEU, bootstrap interval, paired p against the first
  model: :func:`langadapt.eval.translate.score`), with the off-target rate.
* **Fixed prompts.** Greedy answers to fixed target-language user turns: the share identified as the
  target language and the distinct bigrams of words and punctuation marks
  (:func:`langadapt.eval.samples.distinct_bigrams`; 1.0: no repetition, a looping model scores low).
* **English bits per byte** on held-out English text (:mod:`langadapt.scoring`, as `eval bpb` scores): alignment must not
  silently cost English.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import EvalChatConfig
from langadapt.corpus.readers import read_heldout, read_pairs
from langadapt.corpus.scripts import langid_model
from langadapt.errors import UserError
from langadapt.eval.choice import continuation_logprobs, split_requests
from langadapt.eval.common import RESULTS_JSON, SAMPLES_JSONL, each_model
from langadapt.eval.samples import answer_measures, mean_distinct_bigrams, read_prompts
from langadapt.eval.translate import off_target_rate, score
from langadapt.prompts import generate, token_caps
from langadapt.runs import write_json_atomic, write_jsonl_atomic
from langadapt.scoring import bpb_of_model
from langadapt.train.align_data import read_examples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def read_preferences(path: str) -> list[dict[str, Any]]:
    """Preference items as ``train dpo`` reads them (prompt / chosen / rejected, plain or conversational,
    checked line by line): :func:`langadapt.train.align_data.read_examples`."""
    return read_examples([path], "preference")


def render(tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], *, generation_prompt: bool) -> str:
    """The chat template's text of ``turns`` (special tokens as text; tokenized without adding more)."""
    if not tokenizer.chat_template:
        raise UserError("the model has no chat template (train sft sets one)")
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)


def preference_logprobs(model: Any, tokenizer: PreTrainedTokenizerBase, items: list[dict[str, Any]], *,
                        batch_size: int, bf16: bool) -> list[tuple[float, float]]:  # fmt: skip
    """(chosen, rejected) summed log-probability of each item's assistant turn after its prompt."""
    pairs = []
    for item in items:
        prompt = render(tokenizer, item["prompt"], generation_prompt=True)
        for key in ("chosen", "rejected"):
            whole = render(tokenizer, item["prompt"] + item[key], generation_prompt=False)
            if not whole.startswith(prompt):
                raise UserError("the chat template renders a prompt that is not the start of its conversation")
            pairs.append((prompt, whole[len(prompt) :]))
    split = split_requests(tokenizer, pairs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums, _ = continuation_logprobs(model, [c for c, _ in split], [k for _, k in split], batch_size=batch_size,
                                    bf16=bf16, pad_id=pad)  # fmt: skip
    return [(sums[2 * i], sums[2 * i + 1]) for i in range(len(items))]


def _preference_figures(model: Any, tokenizer: PreTrainedTokenizerBase, prefs: list[dict[str, Any]],
                        batch_size: int, bf16: bool) -> dict[str, Any]:  # fmt: skip
    """How often the chosen answer is the likelier one, and the mean margin (nats)."""
    lps = preference_logprobs(model, tokenizer, prefs, batch_size=batch_size, bf16=bf16)
    margins = [c - r for c, r in lps]
    return {"n": len(prefs), "accuracy": sum(x > 0 for x in margins) / len(margins),
            "margin_nats": sum(margins) / len(margins)}  # fmt: skip


def chat_generate(model: Any, tokenizer: PreTrainedTokenizerBase, users: list[str], caps: list[int], *,
                  batch_size: int, bf16: bool) -> list[tuple[str, bool]]:  # fmt: skip
    """Greedy answers to single user turns, rendered by the chat template, up to the end of the turn."""
    prompts = [render(tokenizer, [{"role": "user", "content": u}], generation_prompt=True) for u in users]
    return generate(model, tokenizer, prompts, caps, batch_size=batch_size, bf16=bf16, chat=True)


def evaluate_chat(cfg: EvalChatConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval chat``): every model on the same held-out preferences, chat translations,
    fixed prompts and English text; write ``out/results.json`` and ``out/samples.jsonl``."""
    # the first model is the reference: the base model when it is first, else the one before alignment
    # (the run's adapted model), under its own name
    models = each_model(cfg, "eval chat", first="base" if cfg.first_is_base else None)
    if not cfg.tgt:
        raise UserError("eval chat needs --tgt (the target language code)")
    prefs = read_preferences(cfg.preferences) if cfg.preferences else []
    pairs = read_pairs(cfg.pairs, cfg.src, cfg.tgt, None) if cfg.pairs else []  # eval translate's reader
    prompts = read_prompts(cfg.prompts) if cfg.prompts else []  # eval samples' reader
    english = read_heldout({"english": cfg.english}, cfg.max_docs, cfg.text_field, cfg.max_doc_chars)
    if not (prefs or pairs or prompts or english):
        raise UserError("eval chat needs --preferences, --pairs, --prompts or --english")
    models.resolve()
    bf16 = models.bf16
    langid = langid_model()
    users = [cfg.translate_prompt.format(lang=cfg.tgt_name or cfg.tgt, text=p[cfg.src]) for p in pairs]
    references = [p[cfg.tgt] for p in pairs]
    results, samples, first_outputs = [], [], None
    for m in models:
        model, tokenizer, label = m.model, m.tokenizer, m.label
        model.eval()
        entry: dict[str, Any] = {"label": label, "model": str(m.name), "bf16": bf16, "device": str(models.device)}
        started = time.perf_counter()
        if prefs:
            entry["preferences"] = _preference_figures(model, tokenizer, prefs, cfg.batch_size, bf16)
        if pairs:
            caps = token_caps(tokenizer, references, cfg.max_new_tokens_factor, cfg.max_new_tokens_extra)
            generated = chat_generate(model, tokenizer, users, caps, batch_size=cfg.batch_size, bf16=bf16)
            outputs = [text.strip() for text, _ in generated]
            scores = score(outputs, references, seed=cfg.seed, baseline=first_outputs)
            first_outputs = first_outputs or outputs
            entry["translation"] = {**scores, "direction": f"{cfg.src}-{cfg.tgt}",
                                    "off_target_rate": off_target_rate(outputs, cfg.tgt),
                                    "truncation_rate": sum(t for _, t in generated) / len(generated)}  # fmt: skip
            samples += [{"model": label, "kind": "translation", "prompt": u, "output": o, "reference": r}
                        for u, o, r in zip(users[: cfg.samples], outputs, references)]  # fmt: skip
        if prompts:
            answers = chat_generate(model, tokenizer, [p["prompt"] for p in prompts],
                                    [cfg.max_new_tokens] * len(prompts), batch_size=cfg.batch_size,
                                    bf16=bf16)  # fmt: skip
            texts = [text.strip() for text, _ in answers]
            measured = [answer_measures(t, langid) for t in texts]  # eval samples' measures
            lang = [x["output_lang"] for x in measured]
            entry["prompts"] = {"n": len(prompts), "target_language_share": sum(x == cfg.tgt for x in lang) / len(lang),
                                "distinct_bigrams_mean": mean_distinct_bigrams(measured)}  # fmt: skip
            samples += [{"model": label, "kind": "prompt", "prompt": p["prompt"], "output": t, "output_lang": x}
                        for p, t, x in zip(prompts[: cfg.samples], texts, lang)]  # fmt: skip
        if english:
            entry["english"] = bpb_of_model(model, tokenizer, english["english"], batch_size=cfg.batch_size,
                                            bf16=bf16)  # fmt: skip
        entry["seconds"] = time.perf_counter() - started
        results.append(entry)
        del model
    write_json_atomic(out / RESULTS_JSON, {
        "preferences": cfg.preferences, "pairs": cfg.pairs, "prompts": cfg.prompts, "english": cfg.english,
        "translate_prompt": cfg.translate_prompt, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
        "measures": {"preferences": "chosen vs rejected summed log-probability after the chat-templated prompt",
                     "translation": "greedy chat answers to the translate prompt, sacrebleu chrF++ / chrF / BLEU",
                     "prompts": "greedy chat answers: share in the target language (py3langid), distinct bigrams",
                     "english": "bits per byte of held-out English text"},
        "models": results,
    })  # fmt: skip
    write_jsonl_atomic(out / SAMPLES_JSONL, samples)
    return {"models": {r["label"]: _figures(r) for r in results}}


def _figures(entry: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one model's entry (what stage.json records)."""
    out = {}
    if "preferences" in entry:
        out["preference_accuracy"] = entry["preferences"]["accuracy"]
        out["margin_nats"] = entry["preferences"]["margin_nats"]
    if "translation" in entry:
        out["chrf++"] = entry["translation"]["chrf++"]
    if "prompts" in entry:
        out["target_language_share"] = entry["prompts"]["target_language_share"]
        out["distinct_bigrams_mean"] = entry["prompts"]["distinct_bigrams_mean"]
    if "english" in entry:
        out["english_bpb"] = entry["english"]["bpb"]
    return out


def print_chat(record: dict[str, Any], out: Path) -> None:
    """What ``eval chat`` prints: the models side by side."""
    from rich.console import Console
    from rich.table import Table

    results = json.loads((Path(out) / RESULTS_JSON).read_text(encoding="utf-8"))
    columns = [("preference_accuracy", "pref. acc", "{:.3f}"), ("margin_nats", "margin (nats)", "{:+.2f}"),
               ("chrf++", "chat chrF++", "{:.1f}"), ("target_language_share", "in target lang", "{:.0%}"),
               ("distinct_bigrams_mean", "distinct bigrams", "{:.2f}"), ("english_bpb", "English bpb", "{:.3f}")]  # fmt: skip
    table = Table(title=f"{out}: chat evaluation through each model's chat template")
    table.add_column("model")
    for _, title, _ in columns:
        table.add_column(title, justify="right")
    for m in results["models"]:
        figures = _figures(m)
        table.add_row(m["label"], *["" if figures.get(k) is None else fmt.format(figures[k]) for k, _, fmt in columns])
    Console().print(table)
