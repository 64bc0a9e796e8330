"""Multiple-choice accuracy, scored the way lm-evaluation-harness scores ``multiple_choice`` tasks.

``eval choice`` (:func:`evaluate_choice`) scores models on any task file of ``{question, choices,
answer}`` items, for example one ``eval make-choice`` built (:mod:`langadapt.eval.choice_task`).

How an item is scored (recorded in ``results.json``, because each choice moves the number):

* **Request.** Choice *j* is the continuation ``" " + choice`` (:data:`CONTINUATION_TEMPLATE`) of the
  prompt ``context + question`` (:data:`PROMPT_TEMPLATE`; the context is prepended verbatim).
* **Split** (lm-eval's ``HFLM._encode_pair``). Trailing whitespace of the prompt moves to the start of
  the continuation; ``prompt + continuation`` is tokenized as one string and the continuation's tokens
  are the ones after the prompt's own token count (:func:`split_request`).
* **Start.** Every prompt is read after the document-start token of :func:`langadapt.tokenizer.document.document_start`
  (given, not scored), as bits per byte reads every document. lm-eval gives that token only when the
  context is empty; here it is always there, so base and adapted models start from the same token.
* **Score.** The summed log-probability of the continuation's tokens. ``acc`` takes the argmax of the
  sums; ``acc_norm`` of the sums divided by the choice's length in characters (lm-eval's
  ``completion_len``: the choice text, without the leading space); ``acc_bytes`` divided by its UTF-8
  bytes. Ties go to the first choice (``numpy.argmax``).
* **Uncertainty.** A 95% interval per accuracy from the normal approximation, ``acc ± 1.96 · stderr``
  with lm-eval's ``stderr`` (sample standard deviation / sqrt(n)), clipped to [0, 1].
* **Batching** right-pads the sequences and masks the padding; sequences are sorted by length, so a
  score does not depend on ``batch_size`` (beyond float round-off).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ChoiceConfig
from langadapt.corpus.readers import iter_json_records
from langadapt.data.tokens import file_sha256, tokenizer_fingerprint
from langadapt.errors import UserError
from langadapt.eval.common import RESULTS_JSON, SAMPLES_JSONL, TASK_JSONL, each_model  # noqa: F401 (TASK_JSONL)
from langadapt.eval.lmeval import export_choice
from langadapt.models import resolve_tokenizer
from langadapt.prompts import CONTINUATION_TEMPLATE, PROMPT_TEMPLATE
from langadapt.runs import write_json_atomic, write_jsonl_atomic
from langadapt.runtime import autocast, model_device
from langadapt.tokenizer.document import DocStart, document_start

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Z95 = 1.959963984540054
CI_METHOD = (
    "normal approximation: acc ± 1.96 · stderr, stderr = sample std / sqrt(n) (lm-eval), clipped to [0, 1]"
)
METRICS = ("acc", "acc_norm", "acc_bytes")


# -------------------------------------------------------------------------------------- task file


@dataclass(frozen=True)
class Item:
    question: str
    choices: tuple[str, ...]
    answer: int
    context: str = ""

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(context=self.context, question=self.question)

    def continuations(self) -> list[str]:
        return [CONTINUATION_TEMPLATE.format(choice=c) for c in self.choices]


def read_task(path: str | Path, max_items: int | None = None) -> list[Item]:
    """The items of a task file (every line is checked; the first ``max_items`` are returned)."""
    path = Path(path)
    items = []
    for lineno, rec in iter_json_records(path):
        for key in ("question", "choices", "answer"):
            if key not in rec:
                raise UserError(f"line {lineno} has no field {key!r}", path)
        question, choices, answer, context = (
            rec["question"],
            rec["choices"],
            rec["answer"],
            rec.get("context", ""),
        )
        if not isinstance(question, str) or not isinstance(context, str):
            raise UserError(f"line {lineno}: question and context must be strings", path)
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise UserError(f"line {lineno}: choices must be a list of at least 2 strings", path)
        if not isinstance(answer, int) or isinstance(answer, bool):
            raise UserError(f"line {lineno}: answer must be an integer index, not {answer!r}", path)
        if not 0 <= answer < len(choices):
            raise UserError(f"line {lineno}: answer {answer} is out of range for {len(choices)} choices "
                            f"(0 to {len(choices) - 1})", path)  # fmt: skip
        items.append(Item(question, tuple(choices), answer, context))
    if not items:
        raise UserError("task file holds no items", path)
    return items[:max_items]


# ---------------------------------------------------------------------------------------- scoring


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def split_request(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) exactly as lm-eval's ``HFLM._encode_pair`` splits them."""
    ((ctx, cont),) = split_requests(tokenizer, [(context, continuation)])
    return ctx, cont


def split_requests(tokenizer: PreTrainedTokenizerBase,
                   pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:  # fmt: skip
    """:func:`split_request` of many (context, continuation) pairs, tokenized in two batched calls."""
    return [(ctx, cont) for ctx, cont, _ in _split(tokenizer, pairs)]


def _split(tokenizer: PreTrainedTokenizerBase,
           pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int], list[int]]]:  # fmt: skip
    """(context ids, continuation ids, ids of the joined string) of each pair."""
    moved = []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        moved.append((context, continuation))
    wholes = _encode(tokenizer, [c + k for c, k in moved])
    contexts = _encode(tokenizer, [c for c, _ in moved])
    return [(ctx, whole[len(ctx) :], whole) for whole, ctx in zip(wholes, contexts)]


@dataclass
class Requests:
    """The token ids of every (item, choice), after the document-start token."""

    contexts: list[list[int]]
    continuations: list[list[int]]
    index: list[tuple[int, int]]
    """(item, choice) of each request."""
    split_mismatches: int
    """Requests whose prompt ids are not a prefix of the joined string's ids (a token across the cut)."""


def build_requests(tokenizer: PreTrainedTokenizerBase, items: list[Item], start: DocStart) -> Requests:
    """Every (item, choice) split as lm-eval splits it, the document-start token before each prompt."""
    pairs, index = [], []
    for i, item in enumerate(items):
        for j, continuation in enumerate(item.continuations()):
            pairs.append((item.prompt, continuation))
            index.append((i, j))
    split = _split(tokenizer, pairs)
    mismatches = sum(whole[: len(ctx)] != ctx for ctx, _, whole in split)
    return Requests([[start.token_id, *ctx] for ctx, _, _ in split], [cont for _, cont, _ in split], index,
                    mismatches)  # fmt: skip


def continuation_logprobs(model: PreTrainedModel, contexts: list[list[int]], continuations: list[list[int]], *,
                          batch_size: int = 16, bf16: bool = False, pad_id: int = 0,
                          max_len: int | None = None) -> tuple[list[float], int]:  # fmt: skip
    """Summed log-probability (nats) of each continuation after its context; and how many sequences were
    cut on the left to ``max_len`` input tokens (lm-eval's ``[-(max_length + 1):][:-1]``)."""
    import torch

    sequences, truncated = [], 0
    for ctx, cont in zip(contexts, continuations):
        if not cont:
            raise UserError("a continuation has no tokens")
        seq = [*ctx, *cont]
        if max_len is not None and len(seq) - 1 > max_len:
            if len(cont) > max_len:
                raise UserError(
                    f"a choice of {len(cont)} tokens is longer than the model's context ({max_len})"
                )
            seq, truncated = seq[-(max_len + 1) :], truncated + 1
        sequences.append(seq)
    order = sorted(range(len(sequences)), key=lambda s: (-len(sequences[s]), s))
    device = model_device(model)
    sums = [0.0] * len(sequences)
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        width = len(sequences[batch[0]]) - 1
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, s in enumerate(batch):
            seq, n_cont = torch.tensor(sequences[s]), len(continuations[s])
            n = len(seq) - 1
            ids[row, :n], mask[row, :n] = seq[:-1], 1
            targets[row, n - n_cont : n] = seq[-n_cont:]  # input i predicts id i + 1
        ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
        with torch.inference_mode(), autocast(device, bf16):
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            rows, cols = torch.nonzero(targets != -100, as_tuple=True)
            logits = model.get_output_embeddings()(hidden[rows, cols]).float()
            logp = -torch.nn.functional.cross_entropy(logits, targets[rows, cols], reduction="none").double()
        row_sums = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, rows, logp)
        for row, s in enumerate(batch):
            sums[s] = float(row_sums[row])
    return sums, truncated


def score_items(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[Item], *,
                batch_size: int = 16, bf16: bool = False) -> tuple[list[list[float]], dict[str, Any]]:  # fmt: skip
    """Per item, the summed log-probability of each choice; and how it was scored (doc start, counts)."""
    start = document_start(tokenizer)
    requests = build_requests(tokenizer, items, start)
    max_len = getattr(model.config, "max_position_embeddings", None)
    was_training = model.training
    model.eval()
    try:
        sums, truncated = continuation_logprobs(model, requests.contexts, requests.continuations,
                                                batch_size=batch_size, bf16=bf16, pad_id=start.token_id,
                                                max_len=max_len)  # fmt: skip
    finally:
        model.train(was_training)
    logprobs: list[list[float]] = [[0.0] * len(item.choices) for item in items]
    tokens: list[list[int]] = [[0] * len(item.choices) for item in items]
    for (i, j), value, cont in zip(requests.index, sums, requests.continuations):
        logprobs[i][j], tokens[i][j] = value, len(cont)
    info = {"doc_start": start.token, "doc_start_id": start.token_id, "doc_start_rule": start.rule,
            "truncated": truncated, "split_mismatches": requests.split_mismatches, "tokens": tokens}  # fmt: skip
    return logprobs, info


# ---------------------------------------------------------------------------------------- metrics


def argmax(values: list[float]) -> int:
    """Index of the largest value, the first one on ties (numpy.argmax)."""
    return max(range(len(values)), key=lambda k: (values[k], -k))


def predictions(choices: tuple[str, ...] | list[str], logprobs: list[float]) -> dict[str, int]:
    """The choice each metric picks: summed, per character of the choice, per UTF-8 byte of it."""
    chars = [max(len(c), 1) for c in choices]
    n_bytes = [max(len(c.encode("utf-8")), 1) for c in choices]
    return {
        "acc": argmax(list(logprobs)),
        "acc_norm": argmax([lp / n for lp, n in zip(logprobs, chars)]),
        "acc_bytes": argmax([lp / n for lp, n in zip(logprobs, n_bytes)]),
    }


def interval95(correct: list[bool]) -> tuple[float, float, float | None]:
    """(low, high, stderr) of the mean of 0/1 outcomes (:data:`CI_METHOD`; stderr None for n < 2)."""
    n = len(correct)
    mean = sum(correct) / n
    if n < 2:
        return 0.0, 1.0, None
    stderr = math.sqrt(sum((c - mean) ** 2 for c in correct) / (n - 1)) / math.sqrt(n)
    return max(0.0, mean - Z95 * stderr), min(1.0, mean + Z95 * stderr), stderr


def mcnemar_p(first: list[bool], other: list[bool]) -> float:
    """Two-sided exact McNemar p-value of two models' 0/1 outcomes on the same items: a binomial test on
    the items exactly one of them gets right (1.0 when there are none)."""
    b = sum(f and not o for f, o in zip(first, other))
    c = sum(o and not f for f, o in zip(first, other))
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def correct_by_metric(items: list[Item], logprobs: list[list[float]]) -> dict[str, list[bool]]:
    """Per metric, whether each item's pick is its answer."""
    picks = [predictions(item.choices, lps) for item, lps in zip(items, logprobs)]
    return {metric: [p[metric] == item.answer for p, item in zip(picks, items)] for metric in METRICS}


def summarize(items: list[Item], logprobs: list[list[float]],
              baseline: dict[str, list[bool]] | None = None) -> dict[str, Any]:  # fmt: skip
    """acc / acc_norm / acc_bytes with their intervals, n and the chance level, from per-choice log-probs;
    with ``baseline`` (the first model's :func:`correct_by_metric`) each metric's McNemar p-value against it."""
    out: dict[str, Any] = {
        "n": len(items),
        "chance": sum(1 / len(item.choices) for item in items) / len(items),
    }
    for metric, correct in correct_by_metric(items, logprobs).items():
        low, high, stderr = interval95(correct)
        out[metric] = sum(correct) / len(correct)
        out[f"{metric}_ci95"] = [low, high]
        out[f"{metric}_stderr"] = stderr
        if baseline is not None:
            out[f"{metric}_p_vs_first"] = mcnemar_p(baseline[metric], correct)
    return out


# ------------------------------------------------------------------------------------ eval choice


def evaluate_choice(cfg: ChoiceConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval choice``): score every model in ``cfg.models`` on the same items of
    ``cfg.task``, each with its own tokenizer; write ``out/results.json`` and ``out/samples.jsonl``."""
    models = each_model(cfg, "eval choice")
    if not cfg.task:
        raise UserError("eval choice needs a task file (--task)")
    items = read_task(cfg.task, cfg.max_items)
    models.resolve()
    bf16 = models.bf16
    task = {"task": str(cfg.task), "task_sha256": file_sha256(Path(cfg.task))[:16], "max_items": cfg.max_items,
            "items": len(items)}  # fmt: skip
    scoring = {"prompt_template": PROMPT_TEMPLATE, "continuation_template": CONTINUATION_TEMPLATE,
               "split": "lm-eval: trailing whitespace of the prompt moves to the continuation; the prompt + "
                        "continuation string is tokenized once and cut after the prompt's token count",
               "prefix": "the document-start token before every prompt (given, not scored)",
               "acc": "argmax of the summed log-probability of the continuation's tokens",
               "acc_norm": "argmax of the sum / characters of the choice (lm-eval completion_len, no leading space)",
               "acc_bytes": "argmax of the sum / UTF-8 bytes of the choice", "ci95": CI_METHOD,
               "p_vs_first": "two-sided exact McNemar test against the first model on the same items"}  # fmt: skip
    results, samples = [], []
    baseline = None
    for m in models:
        started = time.perf_counter()
        logprobs, info = score_items(m.model, m.tokenizer, items, batch_size=cfg.batch_size, bf16=bf16)
        seconds = time.perf_counter() - started
        tokens = info.pop("tokens")
        results.append({"label": m.label, "model": str(m.name), "model_path": str(Path(m.path).resolve()),
                        "tokenizer_sha256": tokenizer_fingerprint(resolve_tokenizer(m.path))[:16],
                        **summarize(items, logprobs, baseline), **info, "bf16": bf16, "device": str(models.device),
                        "scoring_seconds": seconds, "seconds_per_item": seconds / len(items)})  # fmt: skip
        baseline = baseline or correct_by_metric(items, logprobs)
        for i, (item, lps) in enumerate(zip(items, logprobs)):
            picks = predictions(item.choices, lps)
            samples.append({"model": m.label, "item": i, "prompt": item.prompt, "continuations": item.continuations(),
                            "choices": list(item.choices), "logprobs": lps, "tokens": tokens[i],
                            "predicted": picks["acc"], "predicted_norm": picks["acc_norm"],
                            "predicted_bytes": picks["acc_bytes"], "answer": item.answer})  # fmt: skip
    depends_on = ["prompt_template", "continuation_template", "doc_start", "max_items", "task_sha256",
                  "model_path", "tokenizer_sha256", "bf16"]  # fmt: skip
    write_json_atomic(out / RESULTS_JSON, {**task, "scoring": scoring, "score_depends_on": depends_on,
                                           "models": results})  # fmt: skip
    write_jsonl_atomic(out / SAMPLES_JSONL, samples)
    export_choice(out, items, cfg, models.paths, bf16)  # out/lm-eval/: the same items as lm-eval tasks
    return {"models": {r["label"]: {k: r[k] for k in ("n", *METRICS)} for r in results}, "items": len(items),
            "bf16": bf16, "device": str(models.device)}  # fmt: skip


def print_choice(record: dict[str, Any], out: Path) -> None:
    """What ``eval choice`` prints: the models side by side (from ``out/results.json``)."""
    from rich.console import Console
    from rich.table import Table

    results = json.loads((Path(out) / RESULTS_JSON).read_text(encoding="utf-8"))
    table = Table(title=f"{out}: multiple-choice accuracy, 95% interval (higher is better)")
    for column in ("model", "n", *METRICS, "p vs first (acc)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in results["models"]:
        cells = [f"{m[k]:.3f} [{m[f'{k}_ci95'][0]:.2f}, {m[f'{k}_ci95'][1]:.2f}]" for k in METRICS]
        p = m.get("acc_p_vs_first")
        table.add_row(m["label"], str(m["n"]), *cells, "" if p is None else f"{p:.3f}")
    console = Console()
    console.print(table)
    first = results["models"][0]
    console.print(f"chance {first['chance']:.3f}; prompts start after {first['doc_start']!r}; continuation "
                  f"{CONTINUATION_TEMPLATE!r}; bf16={first['bf16']}")  # fmt: skip
