"""``eval translate``: few-shot translation of several models on parallel text (GitHub issue 10).

How a score is made (everything that moves it is recorded in ``results.json``):

* **Items.** Test items are a seeded sample (``max_items``) of the pairs whose ``split`` is ``--split``;
  the shot pool is the pairs whose split is ``train`` or ``dev``. A file without a ``split`` field: the
  shot pool is the pairs not sampled as test items. Pool pairs that share a side with a test item are
  dropped, so a prompt never holds its own answer.
* **Prompt** (SambaLingo's FLORES form, :data:`SHOT_TEMPLATE`): ``shots`` examples ``"{src} = {tgt}"``
  joined by a blank line, then ``"{src} ="``. The shots are drawn once per direction by the seed (the same
  for every item); the prompt is read after the document-start token of
  :func:`langadapt.tokenizer.document.document_start`, as every other evaluation reads text.
* **Texts.** Whitespace runs in both sides (newlines included) become one space, in prompts and
  references alike: a newline would end the output.
* **Generation.** Greedy, batched with left padding and a KV cache, stopped at the first newline
  (any token holding a newline ends an output) and cut there. Each item may generate at most
  ``ceil(max_new_tokens_factor · reference tokens) + max_new_tokens_extra`` tokens, counted in the
  model's own tokenizer, so the model with the worse tokenizer is not cut short by a fixed cap; a batch
  generates up to its longest item's cap and every output is then cut to its own, so an output does not
  depend on the batch it was in. An output that reaches its cap without a newline counts as truncated.
* **Scores** (sacrebleu): corpus chrF++ (headline), chrF and BLEU (13a) with their signatures; a 95%
  bootstrap interval (resampled items, seeded); with several models, a paired bootstrap p-value of each
  against the first. Off-target rate: outputs whose language (py3langid, as the corpus stage identifies
  it) is not the direction's target; empty outputs count as off-target.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from langadapt.config import TranslateConfig
from langadapt.corpus.readers import read_pairs
from langadapt.corpus.scripts import langid_model
from langadapt.data.tokens import file_sha256, tokenizer_fingerprint
from langadapt.errors import UserError
from langadapt.eval.common import RESULTS_JSON, SAMPLES_JSONL, each_model
from langadapt.eval.lmeval import export_translate
from langadapt.models import resolve_tokenizer
from langadapt.prompts import (
    QUERY_TEMPLATE,
    SHOT_SEPARATOR,
    SHOT_TEMPLATE,
    build_prompt,
    choose_shots,
    generate,
    one_line,
    split_items,
    token_caps,
)
from langadapt.runs import write_json_atomic, write_jsonl_atomic
from langadapt.tokenizer.document import document_start

N_BOOTSTRAP = 1000
METRICS = ("chrf++", "chrf", "bleu")
MAX_NEW_TOKENS_RULE = ("per item: ceil(max_new_tokens_factor * reference tokens in the model's tokenizer) + "
                       "max_new_tokens_extra; a batch generates up to its longest item's cap, each output is cut "
                       "to its own")  # fmt: skip


# ----------------------------------------------------------------------------------------- scores


def _metrics() -> dict[str, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    return {"chrf++": CHRF(word_order=2), "chrf": CHRF(word_order=0), "bleu": BLEU(tokenize="13a")}


def score(hypotheses: list[str], references: list[str], *, seed: int = 0, n_samples: int = N_BOOTSTRAP,
          baseline: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Corpus chrF++, chrF and BLEU of ``hypotheses``, each with its sacrebleu signature and a 95% bootstrap
    interval; with ``baseline`` (another system's outputs of the same items) a paired bootstrap p-value.

    The resampling is done here on sacrebleu's per-sentence sufficient statistics, as sacrebleu's own
    ``_paired_bs_test`` does (sacrebleu's ``PairedTest`` wants two systems at least and takes its seed from
    the SACREBLEU_SEED environment variable); the p-value is sacrebleu's (Moses'
    bootstrap-hypothesis-difference-significance)."""
    import numpy as np

    n = len(hypotheses)
    idx = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True) if n else None
    out: dict[str, Any] = {"n": n}
    for name, metric in _metrics().items():
        result = metric.corpus_score(hypotheses, [references])
        out[name] = float(result.score)
        out[f"{name}_signature"] = str(metric.get_signature())
        if not n:
            continue
        stats = np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype="float64")
        boot = np.array([metric._compute_score_from_stats(list(s.sum(0))).score for s in stats[idx]])
        out[f"{name}_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        if baseline is not None:
            base_stats = np.array(metric._extract_corpus_statistics(baseline, [references]), dtype="float64")
            base_score = metric._compute_score_from_stats(list(base_stats.sum(0))).score
            base_boot = np.array(
                [metric._compute_score_from_stats(list(s.sum(0))).score for s in base_stats[idx]]
            )
            diffs, real = np.abs(boot - base_boot), abs(result.score - base_score)
            c = int(np.sum(diffs - diffs.mean() > real))
            # sacrebleu's formula gives 1 / (n + 1) to two identical systems; no difference is p = 1 here
            out[f"{name}_p_vs_first"] = 1.0 if real == 0 else (c + 1) / (n_samples + 1)
    return out


def off_target_rate(outputs: list[str], lang: str) -> float:
    """Share of outputs whose identified language (py3langid) is not ``lang``; empty ones count."""
    if not outputs:
        return 0.0
    model = langid_model()
    return sum(not o.strip() or model.classify(o)[0] != lang for o in outputs) / len(outputs)


# ---------------------------------------------------------------------------------- the stage


def _direction_langs(direction: str, src: str, tgt: str) -> tuple[str, str]:
    return (src, tgt) if direction == "src-tgt" else (tgt, src)


def evaluate_translate(cfg: TranslateConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval translate``): every model translates the same items with the same shots;
    write ``out/results.json`` and ``out/samples.jsonl``."""
    models = each_model(cfg, "eval translate")
    if not cfg.pairs:
        raise UserError("eval translate needs a parallel file (--pairs)")
    if not cfg.tgt:
        raise UserError("eval translate needs --tgt (the parallel file's target-language field)")
    pairs = [{**p, cfg.src: one_line(p[cfg.src]), cfg.tgt: one_line(p[cfg.tgt])}
             for p in read_pairs(cfg.pairs, cfg.src, cfg.tgt, None)]  # fmt: skip
    test, pool = split_items(pairs, cfg.split, cfg.max_items, cfg.seed)
    if not test:
        where = f" of split {cfg.split!r}" if cfg.split and any("split" in p for p in pairs) else ""
        raise UserError(f"no test items{where}", cfg.pairs)
    plans = {}
    for direction in cfg.directions:
        s, t = _direction_langs(direction, cfg.src, cfg.tgt)
        try:
            shots = choose_shots(pool, test, s, t, cfg.shots, cfg.seed)
        except UserError as exc:
            raise UserError(str(exc), cfg.pairs) from exc
        examples = [(p[s], p[t]) for p in shots]
        plans[f"{s}-{t}"] = {"src": s, "tgt": t, "shots": examples,
                             "prompts": [build_prompt(examples, item[s]) for item in test],
                             "references": [item[t] for item in test]}  # fmt: skip
    models.resolve()
    bf16 = models.bf16
    results, samples = [], []
    first: dict[str, list[str]] = {}
    for m in models:
        start = document_start(m.tokenizer)
        entry: dict[str, Any] = {"label": m.label, "model": str(m.name), "model_path": str(Path(m.path).resolve()),
                                 "tokenizer_sha256": tokenizer_fingerprint(resolve_tokenizer(m.path))[:16],
                                 "doc_start": start.token, "doc_start_rule": start.rule, "bf16": bf16,
                                 "device": str(models.device), "directions": {}}  # fmt: skip
        for key, plan in plans.items():
            entry["directions"][key] = _translate_direction(m.model, m.tokenizer, plan, cfg, bf16, first.get(key),
                                                            m.label, key, samples)  # fmt: skip
            first.setdefault(key, entry["directions"][key].pop("_outputs"))
        results.append(entry)
    depends_on = ["shots", "template", "doc_start", "max_new_tokens_rule", "seed", "model_path",
                  "tokenizer_sha256", "pairs_sha256", "split", "max_items", "bf16"]  # fmt: skip
    write_json_atomic(out / RESULTS_JSON, {
        "pairs": str(cfg.pairs), "pairs_sha256": file_sha256(Path(cfg.pairs))[:16], "src": cfg.src, "tgt": cfg.tgt,
        "split": cfg.split, "max_items": cfg.max_items, "items": len(test), "seed": cfg.seed,
        "template": {"shot": SHOT_TEMPLATE, "separator": SHOT_SEPARATOR, "query": QUERY_TEMPLATE,
                     "prefix": "the document-start token before every prompt",
                     "stop": "greedy; the output is cut at its first newline and stripped",
                     "texts": "both sides' whitespace runs (newlines included) become one space"},
        "n_shots": cfg.shots, "shots": {k: p["shots"] for k, p in plans.items()},
        "max_new_tokens_rule": MAX_NEW_TOKENS_RULE, "max_new_tokens_factor": cfg.max_new_tokens_factor,
        "max_new_tokens_extra": cfg.max_new_tokens_extra,
        "bootstrap": {"resamples": N_BOOTSTRAP, "seed": cfg.seed, "ci95": "2.5 and 97.5 percentiles",
                      "p_vs_first": "paired bootstrap resampling (sacrebleu / Moses), the first model the baseline"},
        "score_depends_on": depends_on, "models": results,
    })  # fmt: skip
    write_jsonl_atomic(out / SAMPLES_JSONL, samples)
    export_translate(out, plans, cfg, models.paths, bf16)  # out/lm-eval/: the same prompts as lm-eval tasks
    figures = {r["label"]: {k: {m: d[m] for m in ("chrf++", "bleu", "n")} for k, d in r["directions"].items()}
               for r in results}  # fmt: skip
    return {"models": figures, "items": len(test), "bf16": bf16, "device": str(models.device)}


def _translate_direction(model: Any, tokenizer: Any, plan: dict[str, Any], cfg: TranslateConfig, bf16: bool,
                         baseline: list[str] | None, label: str, key: str,
                         samples: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One model's scores on one direction's prompts (its outputs under ``_outputs``); appends its samples."""
    caps = token_caps(tokenizer, plan["references"], cfg.max_new_tokens_factor, cfg.max_new_tokens_extra)
    started = time.perf_counter()
    generated = generate(model, tokenizer, plan["prompts"], caps, batch_size=cfg.batch_size, bf16=bf16)
    seconds = time.perf_counter() - started
    outputs = [text.strip() for text, _ in generated]
    scores = score(outputs, plan["references"], seed=cfg.seed, baseline=baseline)
    for i, (prompt, output, ref, cap, (_, cut)) in enumerate(
        zip(plan["prompts"], outputs, plan["references"], caps, generated)
    ):
        samples.append({"model": label, "direction": key, "item": i, "prompt": prompt, "output": output,
                        "reference": ref, "max_new_tokens": cap, "truncated": cut})  # fmt: skip
    return {
        **scores, "truncation_rate": sum(t for _, t in generated) / len(generated),
        "off_target_rate": off_target_rate(outputs, plan["tgt"]),
        "max_new_tokens": {"min": min(caps), "max": max(caps), "mean": sum(caps) / len(caps)},
        "generation_seconds": seconds, "seconds_per_item": seconds / len(generated), "_outputs": outputs,
    }  # fmt: skip


def print_translate(record: dict[str, Any], out: Path) -> None:
    """What ``eval translate`` prints: models and directions side by side (from ``out/results.json``)."""
    from rich.console import Console
    from rich.table import Table

    results = json.loads((Path(out) / RESULTS_JSON).read_text(encoding="utf-8"))
    table = Table(title=f"{out}: {results['n_shots']}-shot translation, 95% interval (higher is better)")
    for column in (
        "model",
        "direction",
        "n",
        "chrF++",
        "chrF",
        "BLEU",
        "p vs first",
        "truncated",
        "off-target",
    ):
        table.add_column(column, justify="left" if column in ("model", "direction") else "right")
    for m in results["models"]:
        for key, d in m["directions"].items():
            cells = [f"{d[k]:.1f} [{d[f'{k}_ci95'][0]:.1f}, {d[f'{k}_ci95'][1]:.1f}]" for k in METRICS]
            p = d.get("chrf++_p_vs_first")
            table.add_row(m["label"], key, str(d["n"]), *cells, "" if p is None else f"{p:.3f}",
                          f"{d['truncation_rate']:.0%}", f"{d['off_target_rate']:.0%}")  # fmt: skip
    console = Console()
    console.print(table)
    console.print(f"prompt: shots {SHOT_TEMPLATE!r} joined by {SHOT_SEPARATOR!r}, then {QUERY_TEMPLATE!r}; "
                  f"after {results['models'][0]['doc_start']!r}; greedy, cut at the first newline")  # fmt: skip
