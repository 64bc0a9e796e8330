"""Bits per byte: the one metric that compares models across tokenizers.

bpb = (summed negative log-likelihood of every token of a document, in nats) / ln 2 / (UTF-8 bytes of
the document) — lm-eval's ``bits_per_byte``. Per-token loss or perplexity would reward a tokenizer for
cutting text into more, easier pieces; bytes do not depend on the tokenizer.

How a document is scored (recorded in every result, because each choice moves the number):

* **Starting context.** Every document is read after one *document-start* token that is given, not
  scored, so the first real token is predicted from the same context for every model. The token comes
  from the tokenizer (:func:`document_start`): the prefix it adds itself (Llama-2 ``<s>``, Llama-3
  ``<|begin_of_text|>``) if any, else ``<|endoftext|>`` (the document separator of GPT-2 / SmolLM /
  Qwen pretraining), else the EOS token. An extended tokenizer keeps every base id, so base and adapted
  models get the same token.
* **Long documents** are scored in windows of ``max_len`` tokens: the first window scores all its
  tokens; each next window moves by ``stride`` tokens and scores only those, with the
  ``max_len - stride`` tokens before them as left context (``stride < max_len``; lm-eval's rolling
  windows keep a single token of context across a cut).
* **Batching** right-pads windows and masks the padding, and windows are sorted by length, so the sum
  does not depend on ``batch_size`` (beyond float round-off) and the same call gives the same number.
* The softmax runs over every row of the model's head, padding rows included: mass a padding row
  takes is mass the real tokens lose, and bpb should show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import EvalConfig
from langadapt.errors import UserError
from langadapt.runs import write_json_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LN2 = math.log(2.0)
METRICS_JSON = "metrics.json"
"""What ``eval bpb`` writes: every model's figures on every held-out corpus."""
#: Rows of hidden states turned into logits at once; bounds memory at rows × vocabulary floats.
LOGIT_CHUNK = 2048


@dataclass(frozen=True)
class DocStart:
    token: str
    """The token every document is read after (given, not scored)."""
    token_id: int
    rule: str
    """Why this token: 'tokenizer prefix', 'document separator' or 'eos'."""


def document_start(tokenizer: PreTrainedTokenizerBase) -> DocStart:
    """The token every document is read after; decided from the tokenizer alone (see module doc)."""
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_specials) > len(plain) and with_specials[-len(plain) :] == plain:
        prefix = with_specials[0]
        return DocStart(tokenizer.convert_ids_to_tokens(prefix), prefix, "tokenizer prefix")
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return DocStart("<|endoftext|>", vocab["<|endoftext|>"], "document separator")
    if tokenizer.eos_token_id is not None:
        return DocStart(tokenizer.eos_token, tokenizer.eos_token_id, "eos")
    raise UserError("the tokenizer has no BOS, <|endoftext|> or EOS token to start a document with")


def encode_documents(tokenizer: PreTrainedTokenizerBase, texts: list[str], start: DocStart) -> list[list[int]]:
    """Token ids of each document, after the document-start token."""
    # verbose=False: a document longer than the model's context is fine here (it is scored in windows);
    # transformers would warn that it "will result in indexing errors"
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return [[start.token_id, *ids] for ids in encoded]


def windows(n: int, max_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(first input, end, first scored target) of each window over a sequence of ``n`` ids.

    Inputs are ids[first:end]; logits at input i predict id i+1; targets first_scored..end-1 are
    scored. Together the windows score every target 1..n-1 exactly once.
    """
    # stride < max_len: the first target of a window needs at least its previous token as input
    if not 0 < stride < max_len:
        raise UserError(f"stride must be between 1 and max_len - 1 ({max_len - 1}), not {stride}")
    out = []
    end = min(n, max_len)
    out.append((0, end, 1))
    while end < n:
        new_end = min(n, end + stride)
        out.append((max(0, new_end - max_len), new_end, end))
        end = new_end
    return out


def sequence_nats(
    model: PreTrainedModel,
    sequences: list[list[int]],
    *,
    batch_size: int = 8,
    max_len: int = 1024,
    stride: int = 512,
    bf16: bool = False,
    pad_id: int = 0,
) -> list[float]:
    """Summed negative log-likelihood (nats) of ids[1:] given ids[0] for each sequence."""
    import torch

    jobs = [(s, w) for s, ids in enumerate(sequences) for w in windows(len(ids), max_len, stride)]
    # Longest first: batches hold windows of similar length (little padding), in a fixed order.
    jobs.sort(key=lambda job: (-(job[1][1] - job[1][0]), job[0], job[1][0]))
    totals = [0.0] * len(sequences)
    device = next(model.parameters()).device
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b : b + batch_size]
        width = batch[0][1][1] - batch[0][1][0]
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (s, (first, end, scored)) in enumerate(batch):
            seq = torch.tensor(sequences[s][first:end])
            ids[row, : end - first] = seq
            mask[row, : end - first] = 1
            # input i predicts id i+1; score only targets from `scored` on
            targets[row, scored - first - 1 : end - first - 1] = seq[scored - first :]
        nats = _window_nats(model, ids.to(device), mask.to(device), targets.to(device), bf16)
        for row, (s, _) in enumerate(batch):
            totals[s] += nats[row]
    return totals


def _window_nats(model, ids, mask, targets, bf16: bool) -> list[float]:
    import torch

    from langadapt.runtime import head_logits

    with torch.inference_mode(), torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        rows, cols = torch.nonzero(targets != -100, as_tuple=True)
        nll = torch.empty(len(rows), dtype=torch.float64, device=ids.device)
        for c in range(0, len(rows), LOGIT_CHUNK):
            r, k = rows[c : c + LOGIT_CHUNK], cols[c : c + LOGIT_CHUNK]
            logits = head_logits(model, hidden[r, k]).float()  # the model's softcap too (Gemma 2)
            nll[c : c + LOGIT_CHUNK] = torch.nn.functional.cross_entropy(
                logits, targets[r, k], reduction="none"
            ).double()
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add_(0, rows, nll)
    return sums.tolist()


def bpb_of_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    batch_size: int = 8,
    max_len: int = 1024,
    stride: int = 512,
    bf16: bool = False,
) -> dict[str, Any]:
    """Bits per byte of an already-loaded model on ``texts`` (the in-process entry point).

    Returns the sums, so callers can add results over corpora: ``nats``, ``bytes``, ``tokens``
    (scored tokens, the start token not counted), ``words`` (whitespace words), ``docs``, and ``bpb``,
    ``tokens_per_word``, plus the settings that produced them.
    """
    if not texts:
        raise UserError("no documents to evaluate")
    start = document_start(tokenizer)
    sequences = encode_documents(tokenizer, texts, start)
    was_training = model.training
    model.eval()
    try:
        nats = sum(sequence_nats(model, sequences, batch_size=batch_size, max_len=max_len, stride=stride,
                                 bf16=bf16, pad_id=start.token_id))  # fmt: skip
    finally:
        model.train(was_training)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tokens = sum(len(s) - 1 for s in sequences)
    words = sum(len(t.split()) for t in texts)
    return {
        "bpb": nats / LN2 / n_bytes,
        "tokens_per_word": tokens / max(words, 1),
        "nats": nats,
        "bytes": n_bytes,
        "tokens": tokens,
        "words": words,
        "docs": len(texts),
        "doc_start": start.token,
        "doc_start_rule": start.rule,
        "max_len": max_len,
        "stride": stride,
        "bf16": bf16,
    }


def bpb_by_corpus(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: dict[str, list[str]],
                  **kwargs: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """:func:`bpb_of_model` on each named list of documents (``kwargs`` go to it unchanged)."""
    return {name: bpb_of_model(model, tokenizer, docs, **kwargs) for name, docs in texts.items()}


def read_heldout(corpora: dict[str, list[str]], max_docs: int | None, text_field: str = "text",
                 max_chars: int | None = None) -> dict[str, list[str]]:  # fmt: skip
    """``{"target": [...], "english": [...]}``: the first ``max_docs`` documents of each named corpus
    (corpora without files are left out), each cut to its first ``max_chars`` characters
    (:func:`cut_document`), read once, up front."""
    from langadapt.corpus.readers import check_corpus, iter_documents

    return {
        name: [cut_document(doc, max_chars) for doc in iter_documents(check_corpus(files, text_field),
                                                                       text_field, max_docs)]
        for name, files in corpora.items()
        if files
    }  # fmt: skip


def cut_document(text: str, max_chars: int | None) -> str:
    """The first ``max_chars`` characters of ``text``, cut back to the last whitespace if there is one in
    the second half (unspaced scripts: at ``max_chars``). Cutting text, not tokens, gives every model the
    same bytes to score, whatever its tokenizer."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return cut[:space] if space >= max_chars // 2 else cut


def evaluate(cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval bpb``): score every model in ``cfg.models`` on the same held-out target and
    English documents, each with its own tokenizer; write ``out/metrics.json``. The first model is the
    reference the others are compared with (the runner lists the base model first)."""
    from langadapt.eval.lmeval import export_bpb
    from langadapt.models import load_tokenizer, resolve_model
    from langadapt.runtime import load_model, resolve_device, use_bf16

    if not cfg.models:
        raise UserError("eval needs at least one model (--models)")
    texts = read_heldout({"target": cfg.target, "english": cfg.english}, cfg.max_docs, cfg.text_field,
                         cfg.max_doc_chars)
    if not texts:
        raise UserError("eval needs held-out text (--target and/or --english)")
    paths = [resolve_model(m) for m in cfg.models]  # fail on a missing model before any work
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.bf16, device)
    results = []
    for name, path, label in zip(cfg.models, paths, model_labels(cfg.models)):
        model, tokenizer = load_model(path, device), load_tokenizer(path)
        scores = bpb_by_corpus(model, tokenizer, texts, batch_size=cfg.batch_size, max_len=cfg.max_len,
                               stride=cfg.stride, bf16=bf16)  # fmt: skip
        results.append({"label": label, "model": str(name), **scores})
        del model
    metrics = {"models": results, "docs": {k: len(v) for k, v in texts.items()}, "max_doc_chars": cfg.max_doc_chars,
               "device": str(device)}  # fmt: skip
    write_json_atomic(out / METRICS_JSON, metrics)
    export_bpb(out, texts, cfg, paths, bf16)  # out/lm-eval/: the same documents as lm-eval tasks
    return {"models": [r["label"] for r in results], "bf16": bf16, "device": str(device)}


def model_labels(models: list[str], first: str | None = "base") -> list[str]:
    """Short, distinct names for the models compared: ``first`` for the first (the reference; None: its
    own name), the stage folder for the others (:func:`model_label`), the path where two would share one."""
    labels: list[str] = []
    for i, name in enumerate(models):
        label = first if i == 0 and first is not None else model_label(name)
        labels.append(str(name) if label in labels else label)  # e.g. two runs' pretrain/final
    return labels


def model_label(path: str) -> str:
    """Short names for the models of a run: the stage folder (``pretrain/final`` -> ``pretrain``)."""
    p = Path(path)
    if p.name == "final":
        return p.parent.name
    return {"model": "init"}.get(p.name, p.name) if p.exists() else str(path)
