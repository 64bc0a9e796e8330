"""Bits per byte of a loaded model on documents: the measure ``eval bpb``, ``eval chat`` and training's
held-out evaluation share (the scoring rules are :mod:`langadapt.eval.bpb`'s module doc).

bpb = (summed negative log-likelihood of every token of a document, in nats) / ln 2 / (UTF-8 bytes of
the document): every document read after the document-start token
(:func:`langadapt.tokenizer.document.document_start`), long documents in windows of ``max_len`` tokens
moved by ``stride``, batches right-padded and sorted by length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError
from langadapt.runtime import head_logits
from langadapt.tokenizer.document import document_start, encode_documents

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LN2 = math.log(2.0)
#: Rows of hidden states turned into logits at once; bounds memory at rows × vocabulary floats.
LOGIT_CHUNK = 2048


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
