"""Prompts and generation shared by evaluation and data translation (one floor below both).

* **Shots.** :func:`split_items` (test items and shot pool of a parallel file), :func:`choose_shots`
  (drawn once per direction by the seed; no pool pair that shares a side with a test item).
* **Templates.** The few-shot translation prompt (SambaLingo's FLORES form: :data:`SHOT_TEMPLATE` shots
  joined by :data:`SHOT_SEPARATOR`, then :data:`QUERY_TEMPLATE`) and the multiple-choice request
  (:data:`PROMPT_TEMPLATE`, :data:`CONTINUATION_TEMPLATE`).
* **Generation.** :func:`generate`: greedy, batched with left padding and a KV cache, after the
  document-start token (:func:`langadapt.tokenizer.document.document_start`), stopped at the first newline
  (or, for chat prompts, at EOS), each output cut to its own cap (:func:`token_caps`: ceil(factor ·
  reference tokens in the model's own tokenizer) + extra), so an output does not depend on its batch.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError
from langadapt.runtime import autocast, model_device
from langadapt.tokenizer.document import document_start

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SHOT_TEMPLATE = "{src_text} = {tgt_text}"
SHOT_SEPARATOR = "\n\n"
QUERY_TEMPLATE = "{src_text} ="
SHOT_SPLITS = ("train", "dev")
PROMPT_TEMPLATE = "{context}{question}"
"""A multiple-choice item's prompt (``eval choice``): the context prepended verbatim to the question."""
CONTINUATION_TEMPLATE = " {choice}"
"""A multiple-choice item's continuation: each choice after a space."""


# ------------------------------------------------------------------------------------------ items


def split_items(pairs: list[dict[str, Any]], split: str | None, max_items: int | None,
                seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(test items, shot pool) of the pairs, as the module doc describes."""
    rng = random.Random(seed)
    has_split = any("split" in p for p in pairs)
    if has_split and split:
        test = [p for p in pairs if p.get("split") == split]
        pool = [p for p in pairs if p.get("split") in SHOT_SPLITS]
    else:
        test, pool = list(pairs), []
    chosen = list(range(len(test)))
    if max_items is not None and max_items < len(test):
        chosen = sorted(rng.sample(chosen, max_items))
    if not (has_split and split):
        keep = set(chosen)
        pool = [p for i, p in enumerate(test) if i not in keep]
    test = [test[i] for i in chosen]
    return test, pool


def choose_shots(pool: list[dict[str, Any]], test: list[dict[str, Any]], src: str, tgt: str, k: int,
                 seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """``k`` shots drawn from ``pool`` by ``seed`` (the same for every item); no pool pair that shares a
    side with a test item is eligible."""
    seen = {p[lang].strip() for p in test for lang in (src, tgt)}
    eligible = [p for p in pool if p[src].strip() not in seen and p[tgt].strip() not in seen]
    if k > len(eligible):
        raise UserError(f"only {len(eligible)} pairs for shots (split {' / '.join(SHOT_SPLITS)}, or the pairs "
                        f"not used as test items), fewer than --shots {k}")  # fmt: skip
    return random.Random(f"{seed}:{src}-{tgt}").sample(eligible, k)


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) as one space: a newline in a prompt line would end the output."""
    return " ".join(text.split())


def build_prompt(shots: list[tuple[str, str]], src_text: str) -> str:
    """The few-shot prompt: every shot ``"{src} = {tgt}"``, a blank line between, then ``"{src} ="``."""
    lines = [SHOT_TEMPLATE.format(src_text=s, tgt_text=t) for s, t in shots]
    return SHOT_SEPARATOR.join([*lines, QUERY_TEMPLATE.format(src_text=src_text)])


# ------------------------------------------------------------------------------------- generation


def token_caps(
    tokenizer: PreTrainedTokenizerBase, references: list[str], factor: float, extra: int
) -> list[int]:
    """Each reference's generation cap: ceil(factor · its tokens in this tokenizer) + extra."""
    ids = tokenizer(references, add_special_tokens=False)["input_ids"] if references else []
    return [math.ceil(factor * len(i)) + extra for i in ids]


def cut_output(tokenizer: PreTrainedTokenizerBase, generated: list[int], cap: int,
               at_newline: bool = True) -> tuple[str, bool]:  # fmt: skip
    """(text up to the first newline, truncated): ``generated`` cut to ``cap`` tokens and at EOS; truncated
    means the cap was reached without a newline or EOS. ``at_newline=False``: cut at EOS only."""
    ids = list(generated[:cap])
    eos = tokenizer.eos_token_id
    stopped = False
    if eos is not None and eos in ids:
        ids, stopped = ids[: ids.index(eos)], True
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if at_newline and "\n" in text:
        return text.split("\n", 1)[0], False
    return text, not stopped and len(generated) >= cap


def newline_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of every token whose text contains a newline (one decode per vocabulary entry)."""
    return [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], caps: list[int], *,
             batch_size: int = 8, bf16: bool = False, chat: bool = False) -> list[tuple[str, bool]]:  # fmt: skip
    """Greedy continuation of each prompt (after the document-start token), cut at its first newline and
    to its own cap; (text, truncated) per prompt, in order. ``chat``: the prompts are rendered chat
    templates (they hold their own special tokens), read as they are and answered up to the end-of-turn
    (EOS) token, newlines included."""
    import torch

    start = document_start(tokenizer)
    # Stop on any token that holds a newline: a plain list of stop ids, where transformers' stop_strings
    # rebuilds its matching tables from the whole vocabulary on every generate() call. The text is cut at
    # the newline afterwards (cut_output).
    eos = [t for t in [tokenizer.eos_token_id] if t is not None]
    stop_ids = eos if chat else newline_token_ids(tokenizer) + eos
    prefix = [] if chat else [start.token_id]
    encoded = [[*prefix, *ids] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start.token_id
    tokenizer.padding_side = "left"  # padding is built here, left, as generate needs it
    device = model_device(model)
    order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))  # similar lengths together
    results: list[tuple[str, bool]] = [("", False)] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            batch = order[b : b + batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(encoded[i])
                ids[row, width - n :], mask[row, width - n :] = torch.tensor(encoded[i]), 1
            with torch.inference_mode(), autocast(device, bf16):
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                     max_new_tokens=max(caps[i] for i in batch), pad_token_id=pad_id,
                                     eos_token_id=stop_ids, num_beams=1,
                                     temperature=None, top_p=None, top_k=None)  # fmt: skip
            for row, i in enumerate(batch):
                results[i] = cut_output(tokenizer, out[row, width:].tolist(), caps[i], at_newline=not chat)
    finally:
        model.train(was_training)
    return results
