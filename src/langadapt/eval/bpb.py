"""Bits per byte: the one metric that compares models across tokenizers.

bpb = (summed negative log-likelihood of every token of a document, in nats) / ln 2 / (UTF-8 bytes of
the document) — lm-eval's ``bits_per_byte``. Per-token loss or perplexity would reward a tokenizer for
cutting text into more, easier pieces; bytes do not depend on the tokenizer.

How a document is scored (recorded in every result, because each choice moves the number):

* **Starting context.** Every document is read after one *document-start* token that is given, not
  scored, so the first real token is predicted from the same context for every model. The token comes
  from the tokenizer (:func:`langadapt.tokenizer.document.document_start`): the prefix it adds itself (Llama-2 ``<s>``, Llama-3
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

from pathlib import Path
from typing import Any

from langadapt.config import EvalConfig
from langadapt.corpus.readers import read_heldout
from langadapt.errors import UserError
from langadapt.eval.common import METRICS_JSON, each_model
from langadapt.eval.lmeval import export_bpb
from langadapt.runs import write_json_atomic
from langadapt.scoring import bpb_by_corpus


def evaluate(cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``eval bpb``): score every model in ``cfg.models`` on the same held-out target and
    English documents, each with its own tokenizer; write ``out/metrics.json``. The first model is the
    reference the others are compared with (the runner lists the base model first)."""
    models = each_model(cfg, "eval", dtype=cfg.dtype)
    texts = read_heldout({"target": cfg.target, "english": cfg.english}, cfg.max_docs, cfg.text_field,
                         cfg.max_doc_chars)
    if not texts:
        raise UserError("eval needs held-out text (--target and/or --english)")
    models.resolve()
    results = []
    for m in models:
        scores = bpb_by_corpus(m.model, m.tokenizer, texts, batch_size=cfg.batch_size, max_len=cfg.max_len,
                               stride=cfg.stride, bf16=models.bf16)  # fmt: skip
        dtype = str(m.model.dtype).removeprefix("torch.")
        results.append({"label": m.label, "model": str(m.name), "dtype": dtype, **scores})
    metrics = {"models": results, "docs": {k: len(v) for k, v in texts.items()}, "max_doc_chars": cfg.max_doc_chars,
               "device": str(models.device)}  # fmt: skip
    write_json_atomic(out / METRICS_JSON, metrics)
    export_bpb(out, texts, cfg, models.paths, models.bf16)  # out/lm-eval/: the same documents as lm-eval tasks
    return {"models": [r["label"] for r in results], "bf16": models.bf16, "device": str(models.device)}
