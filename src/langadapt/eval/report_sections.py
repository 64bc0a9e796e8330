"""The sections of the run report, each from one stage's records (a section whose records are missing is
left out). ``plot(name, draw, alt)`` draws a figure into the report's plots/ and returns its markdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from langadapt.config import ReportConfig
from langadapt.eval import report_md as md
from langadapt.eval import report_plots as plots
from langadapt.eval.speed import RUNTIMES

Plot = Callable[[str, Callable[..., Any], str], str]
Lines = list[str]
FERTILITY_TEXTS = (("target", "target, training"), ("target_heldout", "target, held-out"),
                   ("english", "English, training"), ("english_heldout", "English, held-out"))  # fmt: skip


def all_sections(run: Any, f: dict[str, str], cfg: ReportConfig, plot: Plot) -> Iterator[tuple[str, Lines]]:
    """(title, markdown lines) of every section the run has records for, in reading order."""
    made = [
        ("Tokenizer: fertility", fertility(run.get(f["extension"]), f["extension"], plot)),
        ("Tokenizer: sweep", sweep(run.get(f["sweep"]), f["sweep"], plot)),
        ("Bits per byte", bits_per_byte(run.get(f["bpb"]), f["bpb"], plot)),
        ("Training", training(run, f, plot)),
        ("Translation", translation(run.get(f["translate"]), f["translate"], cfg.significance, plot)),
        ("Multiple choice", choice(run.get(f["choice"]), f["choice"], cfg.significance, plot)),
        ("Translation samples", translation_samples(run.get(f["translate"]), run.get(f["translate_samples"]),
                                                    f["translate_samples"], cfg)),
        ("Samples", free_samples(run.get(f["samples"]), f["samples"], cfg.max_sample_chars)),
        ("Generation speed", speed(run.get(f["speed"]), f["speed"], plot)),
        ("Chat", chat(run.get(f["chat"]), run.get(f["chat_samples"]), f["chat"], cfg, plot)),
        ("GGUF export", export(run.get(f["export"]), run.get(f["export_verify"]), f["export"], f["export_verify"])),
        ("Stage timings", timings(run.stage_records())),
        ("Recipe", recipe(run.get(f["recipe"]), f["recipe"])),
    ]
    yield from ((title, lines) for title, lines in made if lines)


def significant(p: float | None, alpha: float) -> str:
    return "—" if p is None else ("yes" if p < alpha else "no")


def _arrow(direction: str) -> str:
    return direction.replace("-", "→", 1)


# --------------------------------------------------------------------------------------------- tokenizer


def fertility(ext: dict[str, Any] | None, src: str, plot: Plot) -> Lines:
    if not ext or not ext.get("fertility"):
        return []
    fert, rows, names, before, after = ext["fertility"], [], [], [], []
    for key, name in FERTILITY_TEXTS:
        if key not in fert:
            continue
        b, a = fert[key]["before"], fert[key]["after"]
        rows.append([name, md.count(b.get("docs")), md.count(b.get("words")),
                     md.num(b["tokens_per_word"], "tokens_per_word"), md.num(a["tokens_per_word"], "tokens_per_word"),
                     md.change(b["tokens_per_word"], a["tokens_per_word"], "tokens_per_word"),
                     md.num(b.get("bytes_per_token"), "bytes_per_token"),
                     md.num(a.get("bytes_per_token"), "bytes_per_token")])  # fmt: skip
        names.append(name.replace(", ", "\n"))
        before.append(b["tokens_per_word"])
        after.append(a["tokens_per_word"])
    vocab = (f"Base vocabulary {md.count(ext.get('base_vocab_size'))} tokens, {md.count(ext.get('added'))} added "
             f"({md.count(ext.get('new_vocab_size'))} in all).")  # fmt: skip
    lines = [vocab, ""]
    header = ["text", "documents", "words", "tokens/word, base", "tokens/word, extended", "change",
              "bytes/token, base", "bytes/token, extended"]  # fmt: skip
    lines += [*md.table(header, rows), ""]
    changed = ext.get("english_heldout_changed")
    note = (f"Held-out English documents that tokenize differently: {md.count(changed.get('changed'))} of "
            f"{md.count(changed.get('docs'))}." if isinstance(changed, dict) else "")  # fmt: skip
    lines += [md.source(src, note=note), ""]
    lines.append(plot("fertility.png", partial(plots.fertility, names, before, after),
                      "tokens per word, base and extended tokenizer"))  # fmt: skip
    return lines


def sweep(result: dict[str, Any] | None, src: str, plot: Plot) -> Lines:
    if not result or not result.get("rows"):
        return []
    base, sized = result["rows"][0], result["rows"][1:]
    corpora = [c for c in ("target", "english") if c in base]
    header = ["new tokens", *(f"{c if c == 'target' else 'English'} tokens/word" for c in corpora)]
    rows = [[md.count(r["size"]), *(md.num(r[c]["tokens_per_word"], "tokens_per_word") for c in corpora)]
            for r in result["rows"]]  # fmt: skip
    why = ("every doubling still gained more than the threshold: the largest size"
           if result.get("curve_still_falling") else "the next doubling gains less than the threshold")
    about = (f"Suggested size: **{md.count(result.get('suggested_size'))}** new tokens ({why}, "
             f"{result.get('threshold', 0):.0%} per doubling). Tokens per word on every "
             f"{result.get('heldout_every', 10)}th document, held out from the merge learning; 0 = the base "
             "tokenizer.")  # fmt: skip
    lines = [about, "", *md.table(header, rows), "", md.source(src), ""]
    names = md.CORPUS_NAMES
    curves = {names[c]: [r[c]["tokens_per_word"] for r in sized] for c in corpora}
    basis = {names[c]: base[c]["tokens_per_word"] for c in corpora}
    lines.append(plot("sweep.png", partial(plots.sweep, [r["size"] for r in sized], curves, basis,
                                           result.get("suggested_size", sized[-1]["size"])),
                      "tokens per word against the number of new tokens"))  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------------- modelling


def bits_per_byte(metrics: dict[str, Any] | None, src: str, plot: Plot) -> Lines:
    if not metrics or not metrics.get("models"):
        return []
    models = metrics["models"]
    corpora = [c for c in ("target", "english") if c in models[0]]
    names = md.CORPUS_NAMES
    header = ["model"] + [f"{names[c]} {m}" for c in corpora for m in ("bits/byte", "tokens/word")]
    rows = [[m["label"], *(md.num(m[c][k], kind) for c in corpora
                           for k, kind in (("bpb", "bpb"), ("tokens_per_word", "tokens_per_word")))]
            for m in models]  # fmt: skip
    first = models[0]
    held = "; ".join(f"{names[c]}: {md.count(first[c].get('docs'))} documents, {md.count(first[c].get('bytes'))} bytes"
                     for c in corpora)  # fmt: skip
    about = ("Bits per byte: summed negative log-likelihood / ln 2 / UTF-8 bytes of held-out text, comparable "
             "across tokenizers (lower is better).")
    lines = [about, "", *md.table(header, rows), "", md.source(src, note=f"Held-out text: {held}."), ""]
    series = {names[c]: [m[c]["bpb"] for m in models] for c in corpora}
    lines.append(plot("bpb.png", partial(plots.bpb, [m["label"] for m in models], series),
                      "bits per byte of each model"))  # fmt: skip
    return lines


def training(run: Any, f: dict[str, str], plot: Plot) -> Lines:
    return _pretrain(run.get(f["pretrain"]), run.get(f["pretrain_log"]), f, plot, run.get(f["bpb"])) + _distill(
        run.get(f["distill"]), f["distill"], plot)


def _before_and_after(record: dict[str, Any] | None, bpb: dict[str, Any] | None,
                      last_tokens: int) -> dict[str, tuple[list[float], list[float]]]:  # fmt: skip
    """Held-out bits per byte of the model pretraining started from (at 0 tokens) and of its final weights
    (at the last step's tokens), from ``eval bpb``'s metrics: the points a run without evaluations during
    training (``eval_every: 0``, the demo) measured all the same."""
    start = str((record or {}).get("config", {}).get("model") or "")
    models = (bpb or {}).get("models") or []

    def same(a: str, b: str) -> bool:
        return bool(a) and bool(b) and (a == b or Path(a).resolve() == Path(b).resolve())

    before = next((m for m in models if same(str(m.get("model", "")), start)), None)
    after = next((m for m in models if m.get("label") == "pretrain"), None)
    if before is None or after is None:
        return {}
    out = {}
    for corpus, name in md.CORPUS_NAMES.items():
        a, b = (before.get(corpus) or {}).get("bpb"), (after.get(corpus) or {}).get("bpb")
        if a is not None and b is not None:
            out[name] = ([0, last_tokens], [a, b])
    return out


def _pretrain(record: dict[str, Any] | None, log: list[dict[str, Any]] | None, f: dict[str, str],
              plot: Plot, bpb: dict[str, Any] | None = None) -> Lines:  # fmt: skip
    lines: Lines = []
    if record:
        final = record.get("final") or {}
        weights = f"{final.get('weights', '—')} (step {final.get('step', '—')})" if final else "—"
        rows = [[md.count(record.get("steps")), md.count(record.get("planned_steps")), md.count(record.get("tokens")),
                 md.num(record.get("tokens_per_s"), "per_s"), md.count(record.get("trainable_params")),
                 md.count(record.get("total_params")), str(record.get("trainable", "—")), weights]]  # fmt: skip
        header = ["steps", "planned", "tokens seen", "tokens/s", "trainable params", "params", "trains", "final/"]
        lines += ["### Continual pretraining", "", *md.table(header, rows, "rrrrrrll"), "",
                  md.source(f["pretrain"]), ""]  # fmt: skip
    steps = [r for r in log or [] if r.get("kind") != "eval" and "loss" in r and "tokens" in r]
    tokens = {0: 0, **{r["step"]: r["tokens"] for r in steps}}  # an evaluation before the first step: at 0
    evals = [r for r in log or [] if r.get("kind") == "eval" and r.get("step") in tokens]
    keys = [k for k in ("target_bpb", "english_bpb") if any(k in r for r in evals)]
    if steps:
        names = {"target_bpb": "target", "english_bpb": "English"}
        points = {names[k]: ([tokens[r["step"]] for r in evals if r.get(k) is not None],
                             [r[k] for r in evals if r.get(k) is not None]) for k in keys}  # fmt: skip
        from_eval = not points and bool(points := _before_and_after(record, bpb, steps[-1]["tokens"]))
        lines.append(plot("pretrain_loss.png", partial(plots.training_loss, [r["tokens"] for r in steps],
                                                       [r["loss"] for r in steps], points),
                          "pretraining loss against tokens seen, smoothed, with held-out bits per byte"))  # fmt: skip
        span = plots.smoothing_span(len(steps))
        note = "One point per optimizer step"
        if span > 1:
            note = (f"Faint points: one per optimizer step; line: their exponential moving average over ~{span} "
                    "steps, bias-corrected (each point from the steps up to it)")  # fmt: skip
        if from_eval:
            note += ("; squares: held-out bits per byte of the model pretraining started from and of its final "
                     f"weights, from {f['bpb']} (right axis; no evaluation ran during training).")  # fmt: skip
        else:
            note += "; squares: held-out bits per byte where it was measured (right axis)." if points else "."
        lines += ["", md.source(f["pretrain_log"], note=note), ""]
    if evals and keys:
        names = {"target_bpb": "target bits/byte", "english_bpb": "English bits/byte"}
        rows = [[md.count(r["step"]), md.count(tokens[r["step"]]), *(md.num(r.get(k), "bpb") for k in keys)]
                for r in evals]  # fmt: skip
        lines += ["Evaluations during training (held-out text):", "",
                  *md.table(["step", "tokens seen", *(names[k] for k in keys)], rows), "",
                  md.source(f["pretrain_log"], note="Tokens seen: the step record's."), ""]  # fmt: skip
        series = {names[k].replace(" bits/byte", ""): [r.get(k) for r in evals] for k in keys}
        lines.append(plot("pretrain_eval_bpb.png", partial(plots.curve, [tokens[r["step"]] for r in evals], series,
                                                           ylabel="bits per byte (lower is better)",
                                                           title="Held-out bits per byte during pretraining"),
                          "evaluation bits per byte against tokens seen"))  # fmt: skip
    return lines


DISTILL = {"distill": ("new input rows", "hidden-state MSE", "stage 1: distillation"),
           "calibrate": ("new input + output rows", "next-token loss (nats per token)", "stage 2: calibration")}


def _distill(record: dict[str, Any] | None, src: str, plot: Plot) -> Lines:
    if not record or not record.get("loss"):
        return []
    seconds = record.get("seconds_per_stage", {})
    rows = [[stage, DISTILL.get(stage, ("—",))[0], md.count(len(record.get("losses", {}).get(stage, []))),
             md.num(ends.get("first"), "loss"), md.num(ends.get("last"), "loss"), md.num(seconds.get(stage), "seconds")]
            for stage, ends in record["loss"].items()]  # fmt: skip
    header = ["stage", "trains", "steps", "loss, first steps", "loss, last steps", "seconds"]
    lines = ["### Embedding distillation", "", *md.table(header, rows, "llrrrr"), "",
             md.source(src, note="First / last: the record's means over the first and last few steps. Stage 1's "
                       "loss is the mean squared distance of final hidden states, stage 2's the next-token "
                       "loss in nats per token."), ""]  # fmt: skip
    losses = {s: v for s, v in record.get("losses", {}).items() if v and s in DISTILL}
    if losses:
        lines.append(plot("distill_loss.png", partial(plots.distill, losses, {s: DISTILL[s][1] for s in losses},
                                                      {s: DISTILL[s][2] for s in losses}),
                          "distillation losses per step"))  # fmt: skip
        lines += ["", "*Per optimizer step (the record has no token counts for distillation).*"]
    return lines


# ------------------------------------------------------------------------------------------ downstream


def translation(results: dict[str, Any] | None, src: str, alpha: float, plot: Plot) -> Lines:
    if not results or not results.get("models"):
        return []
    models = results["models"]
    header = ["model", "direction", "n", "chrF++ [95% CI]", "p vs base", f"significant (p < {alpha:g})",
              "chrF [95% CI]", "BLEU [95% CI]", "truncated", "off-target"]  # fmt: skip
    rows = []
    for i, m in enumerate(models):
        for key, d in m["directions"].items():
            p = d.get("chrf++_p_vs_first") if i else None
            rows.append([m["label"], _arrow(key), md.count(d.get("n")),
                         *(md.with_ci(d[k], d.get(f"{k}_ci95"), "score") for k in ("chrf++",)),
                         md.p_value(p), "baseline" if not i else significant(p, alpha),
                         *(md.with_ci(d[k], d.get(f"{k}_ci95"), "score") for k in ("chrf", "bleu")),
                         md.num(d.get("truncation_rate"), "rate"),
                         md.num(d.get("off_target_rate"), "rate")])  # fmt: skip
    boot = results.get("bootstrap", {})
    about = (f"{results.get('n_shots', '?')}-shot, greedy, {md.count(results.get('items'))} items per direction. "
             f"Intervals: bootstrap ({boot.get('ci95', '2.5 and 97.5 percentiles')}, "
             f"{md.count(boot.get('resamples'))} resamples); p: {boot.get('p_vs_first', 'paired bootstrap')}. "
             "Scores 0-100, higher is better; truncated / off-target: share of outputs cut at the token cap / "
             "not identified as the target language.")  # fmt: skip
    lines = [about, "", *md.table(header, rows, "llrrrlrrrr"), "", md.source(src), ""]
    directions = list(models[0]["directions"])
    series = {m["label"]: [m["directions"][k]["chrf++"] for k in directions] for m in models}
    errors = {m["label"]: [tuple(m["directions"][k].get("chrf++_ci95") or (m["directions"][k]["chrf++"],) * 2)
                           for k in directions] for m in models}  # fmt: skip
    marks = {m["label"]: [bool(i) and (m["directions"][k].get("chrf++_p_vs_first") or 1) < alpha
                          for k in directions] for i, m in enumerate(models)}  # fmt: skip
    lines.append(plot("translation.png", partial(plots.scores, [_arrow(k) for k in directions], series, errors,
                                                 marks=marks, ylabel="chrF++ (0-100, higher is better)",
                                                 title=f"Translation chrF++ with 95% intervals (* p < {alpha:g} vs "
                                                       f"{models[0]['label']})"),
                      "chrF++ of each model and direction"))  # fmt: skip
    return lines


def choice(results: dict[str, Any] | None, src: str, alpha: float, plot: Plot) -> Lines:
    if not results or not results.get("models"):
        return []
    models, metrics = results["models"], ("acc", "acc_norm", "acc_bytes")
    header = ["model", "n", "acc [95% CI]", "p vs base (acc)", f"significant (p < {alpha:g})",
              "acc_norm [95% CI]", "acc_bytes [95% CI]", "chance"]  # fmt: skip
    rows = [[m["label"], md.count(m.get("n")), md.with_ci(m["acc"], m.get("acc_ci95"), "acc"),
             md.p_value(m.get("acc_p_vs_first") if i else None),
             "baseline" if not i else significant(m.get("acc_p_vs_first"), alpha),
             *(md.with_ci(m[k], m.get(f"{k}_ci95"), "acc") for k in ("acc_norm", "acc_bytes")),
             md.num(m.get("chance"), "acc")] for i, m in enumerate(models)]  # fmt: skip
    scoring = results.get("scoring", {})
    about = (f"{md.count(results.get('items'))} items. acc: {scoring.get('acc', 'summed log-probability')}; "
             f"acc_norm: per character; acc_bytes: per UTF-8 byte. Intervals: {scoring.get('ci95', '95%')}; "
             f"p: {scoring.get('p_vs_first', 'paired test against the first model')}. Accuracy 0-1, higher is "
             "better.")  # fmt: skip
    lines = [about, "", *md.table(header, rows, "lrrrlrrr"), "", md.source(src), ""]
    series = {m["label"]: [m[k] for k in metrics] for m in models}
    errors = {m["label"]: [tuple(m.get(f"{k}_ci95") or (m[k], m[k])) for k in metrics] for m in models}
    marks = {m["label"]: [bool(i) and (m.get(f"{k}_p_vs_first") or 1) < alpha for k in metrics]
             for i, m in enumerate(models)}  # fmt: skip
    lines.append(plot("choice.png", partial(plots.scores, list(metrics), series, errors, marks=marks,
                                            chance=models[0].get("chance"), fmt="{:.3f}",
                                            ylabel="accuracy (share correct, higher is better)",
                                            title=f"Multiple-choice accuracy with 95% intervals (* p < {alpha:g} "
                                                  f"vs {models[0]['label']})"),
                      "multiple-choice accuracy of each model"))  # fmt: skip
    return lines


def chat(results: dict[str, Any] | None, samples: list[dict[str, Any]] | None, src: str, cfg: ReportConfig,
         plot: Plot) -> Lines:  # fmt: skip
    """eval chat: preference accuracy and margin, chat translation, answers' language and repetition,
    English bits per byte, before (the first model) and after alignment; then a few chat samples."""
    if not results or not results.get("models"):
        return []
    models, alpha = results["models"], cfg.significance
    header = ["model", "preference acc", "margin (nats)", "chat chrF++ [95% CI]", "p vs first",
              f"significant (p < {alpha:g})", "translations off target", "answers in target language",
              "distinct bigrams", "English bits/byte"]  # fmt: skip
    rows = []
    for i, m in enumerate(models):
        pref, tr, pr, en = (m.get(k) or {} for k in ("preferences", "translation", "prompts", "english"))
        p = tr.get("chrf++_p_vs_first") if i else None
        rows.append([m["label"], md.num(pref.get("accuracy"), "acc"), md.num(pref.get("margin_nats"), "loss"),
                     md.with_ci(tr["chrf++"], tr.get("chrf++_ci95"), "score") if tr else "—", md.p_value(p),
                     "baseline" if not i else significant(p, alpha), md.num(tr.get("off_target_rate"), "rate"),
                     md.num(pr.get("target_language_share"), "rate"),
                     md.num(pr.get("distinct_bigrams_mean"), "rate"), md.num(en.get("bpb"), "bpb")])  # fmt: skip
    about = ("Through each model's chat template, on held-out material. Preference accuracy: share of held-out "
             "pairs whose chosen answer gets the higher log-probability; margin: mean chosen − rejected "
             "log-probability. Chat chrF++: greedy answers to \"" + md.text(results.get("translate_prompt", ""), 80)
             + "\" (off target: not identified as the target language; an echo of the source still shares its names "
             "with the reference). Answers to fixed target-language prompts: share identified as the target language, distinct "
             "bigrams of words and punctuation (1 = no repetition). English bits per byte: lower is better.")  # fmt: skip
    lines = [about, "", *md.table(header, rows, "lrrrrlrrrr"), "", md.source(src), ""]
    shown: dict[tuple[str, str], int] = {}
    for s in samples or []:  # the first two of each kind and model
        key = (s["model"], s["kind"])
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= 2:
            lines += [f"**{md.text(s['model'], 60)}** ({s['kind']}): {md.text(s['prompt'], cfg.max_sample_chars)}",
                      "", f"> {md.text(s['output'], cfg.max_sample_chars) or '(empty)'}", ""]  # fmt: skip
    if samples:
        lines += [md.source(f"{src.rsplit('/', 1)[0]}/samples.jsonl", note="The first two answers of each kind and model."), ""]
    return lines


# ---------------------------------------------------------------------------------------------- runtimes


def speed(results: dict[str, Any] | None, src: str, plot: Plot) -> Lines:
    """eval speed: words/s per runtime, language and model, tokens/word beside it, and each model's ratio
    to the first against the fertility limit."""
    models = (results or {}).get("models") or []
    if not models:
        return []
    s = results.get("settings", {})
    by_key = {(c.get("runtime"), c.get("corpus"), c.get("label")): c for c in results.get("comparisons", [])}
    names = md.CORPUS_NAMES
    header = ["runtime", "text", "model", "words/s", "tokens/word, held-out", "tokens/word, generated",
              "steps/word", "ratio", "limit", "closeness", "prompts"]  # fmt: skip
    rows, groups, series = [], [], {m["label"]: [] for m in models}
    for runtime, runtime_name in RUNTIMES.items():
        for corpus, corpus_name in names.items():
            got = [(m, (m.get("runtimes") or {}).get(runtime, {}).get(corpus)) for m in models]
            if not any(g for _, g in got):
                continue
            groups.append(f"{runtime_name}\n{corpus_name}")
            for m, g in got:
                series[m["label"]].append((g or {}).get("words_per_s") or 0.0)
                if not g:
                    continue
                c = by_key.get((runtime, corpus, m["label"]), {})
                held = (m.get("heldout") or {}).get(corpus, {}).get("tokens_per_word")
                rows.append([runtime_name, corpus_name, md.text(m["label"], 80), md.num(g.get("words_per_s"), "words_per_s"),
                             md.num(held, "tokens_per_word"), md.num(g.get("generated_tokens_per_word"), "tokens_per_word"),
                             md.num(g.get("steps_per_word"), "tokens_per_word"), md.num(c.get("ratio"), "ratio"),
                             md.num(c.get("limit"), "ratio"), md.num(c.get("closeness"), "ratio"),
                             _count(g.get("prompts")) + (f" ({_count(g['left_out'])} left out)"
                                                         if g.get("left_out") else "")])  # fmt: skip
    repeats = s.get("repeats", 1)
    timing = f"the fastest of {repeats} timed generations" if repeats != 1 else "one timed generation"
    if s.get("clock") == "cpu":
        timing += " (CPU seconds of the process, not elapsed time)"
    dtype = f", {s['transformers_dtype']}" if s.get("transformers_dtype") else ""
    first = md.text(models[0]["label"], 80)
    about = (f"Words per second generated after the same prompts (the first {s.get('prompt_words', '?')} words of "
             f"{md.count(s.get('per_language'))} held-out documents per language), each continued greedily to "
             f"{md.count(s.get('words'))} words with EOS banned: batch size 1, KV cache, CPU threads: "
             f"{s.get('threads', '?')}, transformers on {s.get('device', '?')}{dtype}; {timing} per prompt after a warm-up. "
             f"ratio: words/s ÷ {first}'s; limit: {first}'s held-out tokens/word ÷ the model's (the gain if a "
             "decoding step cost the same); closeness: ratio ÷ limit. steps/word: decoding steps per generated "
             "word. Higher words/s is better.")  # fmt: skip
    lines = [about, ""]
    if rows:
        lines += [*md.table(header, rows, "lllrrrrrrrr"), ""]
    notes = []
    for runtime, runtime_name in RUNTIMES.items():
        status = (results.get("runtimes") or {}).get(runtime) or {}
        if status.get("reason"):
            notes.append(f"{runtime_name} not measured: {md.text(status['reason'], 300)}.")
    for runtime, prompts in (results.get("left_out") or {}).items():
        notes.append(f"{RUNTIMES.get(runtime, runtime)}: {len(prompts)} prompt(s) left out for every model, "
                     "a model's continuation having reached the token cap without completing its words (a loop "
                     "inside one endless word).")  # fmt: skip
    for m in models:
        skipped = (m.get("llamacpp") or {}).get("skipped")
        if skipped:
            notes.append(f"llama.cpp not measured for {md.text(m['label'], 80)}: {md.text(skipped, 300)}.")
    lines += [*(f"- {n}" for n in notes), ""] if notes else []
    lines.append(md.source(src))
    if rows and any(v for values in series.values() for v in values):
        lines += ["", plot("speed.png", partial(plots.speed, groups, series), "words per second of each model")]
    return lines


def export(record: dict[str, Any] | None, checks: dict[str, Any] | None, src: str, verify_src: str) -> Lines:
    """export gguf: the GGUF, and its check in a real llama.cpp runtime (verify.json, read defensively: a
    check the file lacks is left out)."""
    if not record and not checks:
        return []
    record, checks = record or {}, checks if isinstance(checks, dict) else None
    size = record.get("size_bytes")
    mib = f", {size / 2**20:,.1f} MiB" if isinstance(size, (int, float)) else ""
    status = (record.get("verification") or {}).get("status") or ("verified" if (checks or {}).get("ok") else "—")
    outtype = record.get("outtype") or (checks or {}).get("outtype") or "?"
    about = (f"`{md.text(record.get('gguf', '—'), 120)}`, {md.text(outtype, 20)}{mib}, converted by llama.cpp's "
             f"own converter in {md.num(record.get('export_seconds'), 'seconds')} s (pre-tokenizer "
             f"`{md.text(record.get('pre_tokenizer'), 60)}`). llama.cpp check: **{md.text(status, 300)}**.")  # fmt: skip
    lines = [about, ""]
    if checks is None:
        return [*lines, md.source(src, note="No verify.json: the export was not checked in a llama.cpp runtime.")]
    rows = [*_tokenization_row(checks.get("tokenization")), *_bpb_rows(checks.get("bpb")),
            *_greedy_row(checks.get("greedy"))]  # fmt: skip
    if rows:
        lines += [*md.table(["check", "result", "requirement", "verdict"], rows, "llll"), ""]
    failed = [f"- failed: {md.text(f, 300)}" for f in checks.get("failures") or []]
    return [*lines, *failed, *([""] if failed else []), md.source(src, verify_src)]


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: Any) -> str:
    return md.count(value) if isinstance(value, int) and not isinstance(value, bool) else "—"


def _tokenization_row(tok: Any) -> list[list[str]]:
    if not isinstance(tok, dict):
        return []
    mismatches = _number(tok.get("mismatches"))
    result = (f"{_count(tok.get('mismatches'))} of {_count(tok.get('documents'))} texts differ "
              f"({_count(tok.get('tokens'))} tokens)")  # fmt: skip
    return [["tokenization, id for id", result, "none differ", _verdict(None if mismatches is None else mismatches == 0)]]


def _bpb_rows(bpb: Any) -> list[list[str]]:
    if not isinstance(bpb, dict):
        return []
    tolerance, required = _number(bpb.get("tolerance")), bpb.get("required", True)
    need = f"within {tolerance * 100:.2f}%" if tolerance is not None else "within the tolerance"
    rows = []
    for corpus, b in bpb.items():
        if not isinstance(b, dict):
            continue
        diff = _number(b.get("relative_diff"))
        apart = md.num(None if diff is None else diff * 100, "percent")
        result = (f"llama.cpp {md.num(_number(b.get('llama_cpp')), 'bpb')}, transformers "
                  f"{md.num(_number(b.get('transformers')), 'bpb')} ({apart}% apart)")  # fmt: skip
        ok = None if diff is None or tolerance is None else diff <= tolerance
        rows.append([f"bits per byte, {md.text(md.CORPUS_NAMES.get(corpus, corpus), 40)}", result,
                     need if required else f"reported ({need} required of f32/f16)", _verdict(ok, required)])  # fmt: skip
    return rows


def _greedy_row(g: Any) -> list[list[str]]:
    if not isinstance(g, dict):
        return []
    agree, n, required = _number(g.get("agree")), _number(g.get("prompts")), g.get("required", True)
    ok = None if agree is None or n is None else agree == n
    return [[f"greedy continuations ({_count(g.get('max_new_tokens'))} tokens)",
             f"{_count(g.get('agree'))} of {_count(g.get('prompts'))} prompts agree",
             "all agree" if required else "reported (required of f32)", _verdict(ok, required)]]  # fmt: skip


def _verdict(ok: bool | None, required: bool = True) -> str:
    if ok is None:
        return "—"
    if not required:
        return "reported"
    return "pass" if ok else "**FAIL**"


# ------------------------------------------------------------------------------------------------ text


def _source_text(prompt: str, template: dict[str, Any]) -> str:
    """The test sentence of a few-shot prompt: its last block, without the query template around it."""
    last = prompt.split(template.get("separator", "\n\n"))[-1]
    before, _, after = template.get("query", "{src_text} =").partition("{src_text}")
    if last.startswith(before) and last.endswith(after):
        last = last[len(before):len(last) - len(after)] if after else last[len(before):]
    return last.strip()


def translation_samples(results: dict[str, Any] | None, samples: list[dict[str, Any]] | None, src: str,
                        cfg: ReportConfig) -> Lines:  # fmt: skip
    if not samples or not cfg.translation_samples:
        return []
    template = (results or {}).get("template", {})
    by_item: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for s in samples:
        if s.get("item", 0) < cfg.translation_samples:
            by_item.setdefault((s["direction"], s["item"]), []).append(s)
    limit, lines = cfg.max_sample_chars, []
    for (direction, item), outputs in by_item.items():
        rows = [["source", md.text(_source_text(outputs[0]["prompt"], template), limit)],
                ["reference", md.text(outputs[0].get("reference", ""), limit)]]
        for s in outputs:
            cut = f" (cut at {s['max_new_tokens']} tokens)" if s.get("truncated") else ""
            rows.append([md.text(s["model"], 80) + cut, md.text(s["output"], limit)])
        lines += [f"**{_arrow(direction)}, item {item}**", "", *md.table(["", "text"], rows, "ll"), ""]
    return [*lines, md.source(src, note=f"The first {cfg.translation_samples} items of each direction.")]


def free_samples(results: dict[str, Any] | None, src: str, limit: int) -> Lines:
    if not results or not results.get("prompts"):
        return []
    how = results.get("generation", "generated")
    about = (f"Each model continues the same prompts ({how}; at most {md.count(results.get('max_new_tokens'))} "
             "new tokens).")  # fmt: skip
    lines = [about, ""]
    models = results.get("models", [])
    if any("distinct_bigrams_mean" in m or "prompt_language_share" in m for m in models):
        rows = [[md.text(m["label"], 80), md.num(m.get("distinct_bigrams_mean"), "rate"),
                 md.num(m.get("prompt_language_share"), "rate")] for m in models]  # fmt: skip
        header = ["model", "distinct bigrams, mean (1 = no repetition)", "outputs in the prompt's language"]
        lines += [*md.table(header, rows), ""]
    for i, prompt in enumerate(results["prompts"]):
        rows = []
        for m in models:
            got = m.get("samples", [])
            if i >= len(got):
                rows.append([md.text(m["label"], 80), "—"])
                continue
            notes = [f"language: {got[i]['output_lang']}"] if got[i].get("output_lang") else []
            notes += ["cut at the token cap"] if got[i].get("truncated") else []
            rows.append([md.text(m["label"], 80) + (f" ({', '.join(notes)})" if notes else ""),
                         md.text(got[i]["output"], limit)])  # fmt: skip
        lines += [f"**Prompt {i + 1}** ({md.text(prompt.get('lang', '?'), 20)}): {md.text(prompt['prompt'], limit)}",
                  "", *md.table(["model", "output"], rows, "ll"), ""]  # fmt: skip
    return [*lines, md.source(src)]


def timings(records: list[tuple[str, dict[str, Any]]]) -> Lines:
    if not records:
        return []
    rows = [[str(r.get("stage", "—")), f"`{name}/`", md.num(r.get("seconds"), "seconds"),
             str(r.get("langadapt_version", "—")), str(r.get("git_commit", "—"))[:10]]
            for name, r in records]  # fmt: skip
    total = sum(r.get("seconds") or 0 for _, r in records)
    rows.append(["**total**", "", f"**{md.num(total, 'seconds')}**", "", ""])
    return [*md.table(["stage", "folder", "seconds", "langadapt", "git commit"], rows, "llrll"), "",
            md.source("*/stage.json",
                      note="Seconds: the stage's own run (a skipped rerun adds nothing).")]  # fmt: skip


def recipe(text: str | None, src: str) -> Lines:
    if not text:
        return []
    return ["<details><summary>The resolved recipe of this run (<code>recipe.yaml</code>)</summary>", "",
            *md.fenced(text, "yaml"), "", "</details>", "", md.source(src)]  # fmt: skip
