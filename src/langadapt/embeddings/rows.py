"""Which embedding rows an extended tokenizer needs, and the values new rows start from.

Row layout of a resized matrix (ids are rows)::

    [0, n_base)                 base tokens: never written, bit-identical to the base model
    [n_base, n_ext)             new tokens (some may reuse padding rows the base matrix already had)
    [n_ext, rows_before)        padding the base model already had: left as it was
    [max(n_ext, rows_before), rows_after)   new padding rows (--pad-to-multiple-of): set "low"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class RowPlan:
    n_base: int
    """Tokens of the base tokenizer (rows below are base rows)."""
    n_ext: int
    """Tokens of the extended tokenizer."""
    rows_before: int
    """Rows of the base model's embedding matrix (may exceed n_base: padded)."""
    rows_after: int
    """Rows after resizing (>= n_ext, rounded up to pad_to_multiple_of)."""

    @property
    def new_ids(self) -> range:
        return range(self.n_base, self.n_ext)

    @property
    def new_padding(self) -> range:
        return range(max(self.n_ext, self.rows_before), self.rows_after)

    @property
    def reused_rows(self) -> int:
        """New tokens that land on padding rows the base matrix already had (no new row needed)."""
        return max(0, min(self.n_ext, self.rows_before) - self.n_base)


def plan_rows(
    base_tok: PreTrainedTokenizerBase, ext_tok: PreTrainedTokenizerBase, rows_before: int,
    pad_to_multiple_of: int | None, model_path: str | None = None,
) -> RowPlan:  # fmt: skip
    """Plan the rows for ``ext_tok``, which the caller has checked extends ``base_tok`` (check_extends)."""
    n_base, n_ext = len(base_tok), len(ext_tok)
    if rows_before < n_base:
        raise UserError(f"the model has {rows_before} embedding rows but its tokenizer {n_base} tokens: ids "
                        f"{rows_before}..{n_base - 1} have no row", model_path)  # fmt: skip
    rows = max(n_ext, rows_before)
    if pad_to_multiple_of:
        rows = -(-rows // pad_to_multiple_of) * pad_to_multiple_of
    return RowPlan(n_base=n_base, n_ext=n_ext, rows_before=rows_before, rows_after=rows)


def check_extends(base_tok: PreTrainedTokenizerBase, ext_tok: PreTrainedTokenizerBase,
                  tokenizer_path: str = "") -> None:  # fmt: skip
    """UserError unless every base token keeps its id in ``ext_tok`` and ids stay contiguous."""
    base_vocab, ext_vocab = base_tok.get_vocab(), ext_tok.get_vocab()
    moved = [(t, i, ext_vocab.get(t)) for t, i in base_vocab.items() if ext_vocab.get(t) != i]
    if moved:
        token, old, new = min(moved, key=lambda m: m[1])
        where = "is missing" if new is None else f"has id {new}"
        raise UserError(f"tokenizer does not extend the model's: token {token!r} (id {old} in the model's "
                        f"tokenizer) {where} here; {len(moved)} base tokens differ", tokenizer_path)  # fmt: skip
    if sorted(ext_vocab.values()) != list(range(len(ext_vocab))):
        raise UserError("tokenizer ids are not contiguous 0..len-1", tokenizer_path)


def subword_ids(base_fast, token: str) -> list[int]:
    """The base ids that ``token`` (a string in the tokenizer model's alphabet) splits into.

    ``model.tokenize`` runs the base BPE on the token's own text, without normalizer or pre-tokenizer,
    so byte-level and Metaspace tokens split exactly as inside a word.
    """
    return [t.id for t in base_fast.model.tokenize(token)]


def mean_subword_rows(weight: torch.Tensor, base_fast, tokens: list[str], n_base: int) -> torch.Tensor:
    """Row of each new token = mean of the base rows of its base-tokenizer pieces (SambaLingo)."""
    import torch

    fallback = weight[:n_base].mean(0)
    out = torch.empty((len(tokens), weight.shape[1]), dtype=weight.dtype)
    for i, token in enumerate(tokens):
        ids = [j for j in subword_ids(base_fast, token) if j < n_base]
        out[i] = weight[ids].mean(0) if ids else fallback
    return out


def mean_rows(weight: torch.Tensor, n_base: int, count: int) -> torch.Tensor:
    return weight[:n_base].mean(0, keepdim=True).expand(count, -1).clone()


def random_rows(weight: torch.Tensor, n_base: int, count: int, seed: int) -> torch.Tensor:
    """Normal(0, std of the base rows' entries), from a seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    std = weight[:n_base].float().std().item()
    return (torch.randn((count, weight.shape[1]), generator=gen) * std).to(weight.dtype)


def initial_rows(method: str, weight: torch.Tensor, base_fast, tokens: list[str], n_base: int,
                 seed: int) -> torch.Tensor:  # fmt: skip
    if method == "mean-subword":
        return mean_subword_rows(weight, base_fast, tokens, n_base)
    if method == "mean":
        return mean_rows(weight, n_base, len(tokens))
    if method == "random":
        return random_rows(weight, n_base, len(tokens), seed)
    raise UserError(f"unknown init method {method!r}")
