"""The exported GGUF against the Hugging Face model it came from, in a real llama.cpp runtime.

1. Tokenization: held-out target and English documents (plus probes: every special token written in text,
   the chat template's output, a run of the new tokens' texts) get the same ids, id for id, BOS included,
   from llama.cpp (``add_special``, special tokens parsed as transformers does) and from transformers.
2. Bits per byte: the same documents (cut to one context), read after the document-start token
   (:mod:`langadapt.tokenizer.document`), scored from llama.cpp's logits and by :mod:`langadapt.scoring`;
   f32 and f16 must agree within ``bpb_tolerance`` (relative), bf16 and q8_0 are reported.
3. Greedy continuations of held-out prompts: f32 must give the same ids as transformers (no EOS stop on
   either side); the other outtypes report how many agree and where the first difference is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from langadapt.config.export import EXACT_OUTTYPES, ExportConfig
from langadapt.corpus.readers import cut_document, iter_documents
from langadapt.eval.samples import opening
from langadapt.llamacpp.session import LlamaCppModel, LlamaRuntime
from langadapt.models import load_model, load_tokenizer
from langadapt.runs import Timer
from langadapt.scoring import LN2, bpb_of_model
from langadapt.tokenizer.document import document_start

DEMO_ENGLISH = Path(__file__).resolve().parents[1] / "demo_data" / "en-valid.jsonl.gz"
NEW_TOKEN_PROBE = 200
"""New tokens written out, one after the other, in the new-token probe."""


def corpora(cfg: ExportConfig) -> dict[str, list[str]]:
    """Held-out files per language; English defaults to langadapt's packaged demo text when none is given."""
    given = {"target": list(cfg.verify_target), "english": list(cfg.verify_english)}
    if not given["english"]:
        given["english"] = [str(DEMO_ENGLISH)]
    return {k: v for k, v in given.items() if v}


def verify(gguf: Path, model_dir: Path, runtime: LlamaRuntime, cfg: ExportConfig,
           first_new_id: int | None) -> dict[str, Any]:  # fmt: skip
    """Run the three checks; the figures, with ``ok`` and the ``failures`` (one line each)."""
    tokenizer = load_tokenizer(model_dir)
    files = corpora(cfg)
    docs = {name: list(iter_documents(paths, cfg.text_field, cfg.tokenize_docs)) for name, paths in files.items()}
    scored = {name: [cut_document(d, cfg.max_doc_chars) for d in texts[: cfg.bpb_docs]] for name, texts in docs.items()}
    start = document_start(tokenizer)
    longest = max((len(tokenizer(d, add_special_tokens=False, verbose=False)["input_ids"]) for t in scored.values() for d in t),
                  default=0)  # fmt: skip
    n_ctx = max(512, 64 * math.ceil((longest + 2 + cfg.max_new_tokens + 64) / 64))
    result: dict[str, Any] = {"files": files, "outtype": cfg.outtype, "n_ctx": n_ctx,
                              "doc_start": start.token, "runtime": runtime.source}  # fmt: skip
    seconds = result["check_seconds"] = {}
    with LlamaCppModel(gguf, runtime, n_ctx=n_ctx, n_threads=cfg.threads) as llm:
        with Timer() as t:
            result["tokenization"] = tokenization(llm, tokenizer, docs, first_new_id)
        seconds["tokenization"] = round(t.seconds, 2)
        model = load_model(model_dir)  # fp32 on the CPU: the reference
        model.eval()
        with Timer() as t:
            result["bpb"] = bits_per_byte(llm, model, tokenizer, scored, start.token_id, cfg)
        seconds["bpb"] = round(t.seconds, 2)
        with Timer() as t:
            result["greedy"] = greedy(llm, model, tokenizer, docs, start.token_id, cfg)
        seconds["greedy"] = round(t.seconds, 2)
    result["failures"] = failures(result, cfg)
    result["ok"] = not result["failures"]
    return result


# ---------------------------------------------------------------------------------------------- 1


def tokenization(llm: LlamaCppModel, tokenizer: Any, docs: dict[str, list[str]],
                 first_new_id: int | None) -> dict[str, Any]:  # fmt: skip
    """Documents and probes tokenized by both; counts and the first mismatch of each kind."""
    out: dict[str, Any] = {}
    for name, texts in docs.items():
        out[name] = _compare(llm, tokenizer, texts, add_special=True)
    out["probes"] = _compare(llm, tokenizer, probes(tokenizer, docs, first_new_id), add_special=False)
    out["documents"] = sum(v["documents"] for v in out.values())
    out["mismatches"] = sum(v["mismatches"] for k, v in out.items() if isinstance(v, dict))
    return out


def probes(tokenizer: Any, docs: dict[str, list[str]], first_new_id: int | None) -> list[str]:
    """Texts that exercise what plain documents may not: special tokens written in text, the chat
    template's output and the new tokens (read without the tokenizer's own BOS/EOS)."""
    sample = next((d[:200] for texts in docs.values() for d in texts), "Hello")
    specials = [t for t in tokenizer.all_special_tokens if t]
    texts = [" ".join(f"{t}{sample[:20]}" for t in specials)] if specials else []
    if getattr(tokenizer, "chat_template", None):
        texts.append(tokenizer.apply_chat_template([{"role": "user", "content": sample}], tokenize=False,
                                                   add_generation_prompt=True))  # fmt: skip
    if first_new_id is not None and len(tokenizer) > first_new_id:
        step = max(1, (len(tokenizer) - first_new_id) // NEW_TOKEN_PROBE)
        ids = list(range(first_new_id, len(tokenizer), step))[:NEW_TOKEN_PROBE]
        texts.append(" ".join(tokenizer.decode([i]) for i in ids))
    return texts


def _compare(llm: LlamaCppModel, tokenizer: Any, texts: list[str], *, add_special: bool) -> dict[str, Any]:
    mismatches, first = 0, None
    tokens = 0
    for i, text in enumerate(texts):
        # verbose=False: a document longer than the model's context is fine to tokenize (transformers warns)
        want = tokenizer(text, add_special_tokens=add_special, verbose=False)["input_ids"]
        got = llm.tokenize(text, add_special=add_special, parse_special=True)
        tokens += len(want)
        if got != want:
            mismatches += 1
            if first is None:
                at = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
                first = {"doc": i, "position": at, "transformers": want[max(0, at - 3) : at + 5],
                         "llama_cpp": got[max(0, at - 3) : at + 5], "text": text[:80]}  # fmt: skip
    return {"documents": len(texts), "tokens": tokens, "mismatches": mismatches, "first_mismatch": first}


# ---------------------------------------------------------------------------------------------- 2


def bits_per_byte(llm: LlamaCppModel, model: Any, tokenizer: Any, scored: dict[str, list[str]], start_id: int,
                  cfg: ExportConfig) -> dict[str, Any]:  # fmt: skip
    """Per corpus: bpb from llama.cpp's logits (its own ids) and from transformers, and their relative gap."""
    import numpy as np

    out: dict[str, Any] = {}
    for name, texts in scored.items():
        if not texts:
            continue
        ref = bpb_of_model(model, tokenizer, texts, batch_size=1, max_len=llm.n_ctx, stride=llm.n_ctx - 1)
        nats = 0.0
        for text in texts:
            ids = [start_id, *llm.tokenize(text, add_special=False, parse_special=False)]
            logits = llm.logits(ids)[:-1].astype(np.float64)
            top = logits.max(axis=1, keepdims=True)
            logz = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
            nats += float((logz - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
        bpb = nats / LN2 / ref["bytes"]
        rel = abs(bpb - ref["bpb"]) / ref["bpb"]
        out[name] = {"llama_cpp": round(bpb, 6), "transformers": round(ref["bpb"], 6), "relative_diff": rel,
                     "docs": len(texts), "bytes": ref["bytes"], "tokens": ref["tokens"]}  # fmt: skip
    if out:
        worst = max(v["relative_diff"] for v in out.values())
        out["max_relative_diff"] = worst
        out["tolerance"] = cfg.bpb_tolerance
        out["within_tolerance"] = worst <= cfg.bpb_tolerance
        out["required"] = cfg.outtype in EXACT_OUTTYPES
    return out


# ---------------------------------------------------------------------------------------------- 3


def greedy(llm: LlamaCppModel, model: Any, tokenizer: Any, docs: dict[str, list[str]], start_id: int,
           cfg: ExportConfig) -> dict[str, Any]:  # fmt: skip
    """Greedy continuations of the openings of each corpus' first documents, in both runtimes."""
    items = []
    for name, texts in docs.items():
        prompts = [p for p in (opening(d, 20, 80) for d in texts) if p][: cfg.prompts]
        for prompt in prompts:
            ids = [start_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
            want, margins = hf_greedy(model, ids, cfg.max_new_tokens)
            got = llm.generate(ids, cfg.max_new_tokens)
            at = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), None)
            items.append({"corpus": name, "prompt": prompt, "agree": got == want, "first_difference": at,
                          # a difference at a near-tie (top-2 logits this close in transformers) is numerics
                          "transformers_top2_gap_there": None if at is None else round(margins[at], 6),
                          "transformers": tokenizer.decode(want), "llama_cpp": tokenizer.decode(got)})  # fmt: skip
    agree = sum(i["agree"] for i in items)
    return {"prompts": len(items), "agree": agree, "max_new_tokens": cfg.max_new_tokens,
            "required": cfg.outtype == "f32", "items": items}  # fmt: skip


def hf_greedy(model: Any, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """n greedy ids from transformers (KV cache, no EOS stop) and the top-2 logit gap at each step."""
    import torch

    from langadapt.runtime import cache_key

    key = cache_key(model)
    new, gaps = [], []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            logits = out.logits[0, -1].float()
            top = torch.topk(logits, 2).values
            token = int(torch.argmax(logits))
            new.append(token)
            gaps.append(float(top[0] - top[1]))
            out = model(input_ids=torch.tensor([[token]]), use_cache=True, **{key: out[key]})
    return new, gaps


# ------------------------------------------------------------------------------------------ verdict


def failures(result: dict[str, Any], cfg: ExportConfig) -> list[str]:
    """One line per failed requirement (empty: verified)."""
    bad = []
    tok = result["tokenization"]
    if tok["mismatches"]:
        bad.append(f"tokenization differs from transformers' on {tok['mismatches']} of {tok['documents']} texts")
    bpb = result["bpb"]
    if bpb and bpb["required"] and not bpb["within_tolerance"]:
        bad.append(f"bits per byte differ from transformers' by {100 * bpb['max_relative_diff']:.3f}% "
                   f"(> {100 * cfg.bpb_tolerance:.2f}%)")  # fmt: skip
    g = result["greedy"]
    if g["required"] and g["agree"] < g["prompts"]:
        bad.append(f"greedy continuations differ from transformers' on {g['prompts'] - g['agree']} of "
                   f"{g['prompts']} prompts")  # fmt: skip
    return bad
