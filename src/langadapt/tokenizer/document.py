"""The document-start rule: the one token every document, prompt and training sequence is read after.

The token comes from the tokenizer alone (:func:`document_start`): the prefix it adds itself (Llama-2
``<s>``, Llama-3 ``<|begin_of_text|>``) if any, else ``<|endoftext|>`` (the document separator of GPT-2 /
SmolLM / Qwen pretraining), else the EOS token. An extended tokenizer keeps every base id, so base and
adapted models get the same token. Evaluation (bits per byte, choice, translate, samples), data translate,
embedding distillation and chat training all read text after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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
