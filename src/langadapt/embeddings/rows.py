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


CHUNK_ROWS = 8192
"""Rows converted to float32 at a time when a statistic of the whole base matrix is taken (a 128k x 4096
bf16 matrix would otherwise be copied whole: 2 GB)."""


def base_row_mean(weight: torch.Tensor, n_base: int) -> torch.Tensor:
    """Mean of the base rows, in float32, a chunk of rows at a time."""
    import torch

    total = torch.zeros(weight.shape[1], dtype=torch.float64)
    for chunk in weight[:n_base].split(CHUNK_ROWS):
        total += chunk.double().sum(0)
    return (total / n_base).float()


def base_row_std(weight: torch.Tensor, n_base: int) -> float:
    """Standard deviation of the base rows' entries (unbiased, as torch.std), a chunk of rows at a time."""
    total = square = 0.0
    for chunk in weight[:n_base].split(CHUNK_ROWS):
        chunk = chunk.double()
        total += chunk.sum().item()
        square += (chunk * chunk).sum().item()
    count = n_base * weight.shape[1]
    return ((square - total * total / count) / (count - 1)) ** 0.5


def mean_subword_rows(weight: torch.Tensor, base_fast, tokens: list[str], n_base: int) -> torch.Tensor:
    """Row of each new token = mean of the base rows of its base-tokenizer pieces (SambaLingo), in float32.

    Only the pieces' rows are converted: the matrix stays in its dtype, and the caller rounds each new
    row once, when it writes it into the (bf16) matrix."""
    import torch

    fallback = None
    out = torch.empty((len(tokens), weight.shape[1]), dtype=torch.float32)
    for i, token in enumerate(tokens):
        ids = [j for j in subword_ids(base_fast, token) if j < n_base]
        if ids:
            out[i] = weight[ids].float().mean(0)
        else:  # rare (a token of unknown pieces): the mean of all base rows, computed once
            fallback = base_row_mean(weight, n_base) if fallback is None else fallback
            out[i] = fallback
    return out


def mean_rows(weight: torch.Tensor, n_base: int, count: int) -> torch.Tensor:
    return base_row_mean(weight, n_base)[None].expand(count, -1).clone()


def random_rows(weight: torch.Tensor, n_base: int, count: int, seed: int) -> torch.Tensor:
    """Normal(0, std of the base rows' entries), from a seeded generator, in float32."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn((count, weight.shape[1]), generator=gen) * base_row_std(weight, n_base)


def initial_rows(method: str, weight: torch.Tensor, base_fast, tokens: list[str], n_base: int,
                 seed: int) -> torch.Tensor:  # fmt: skip
    """The new tokens' rows (float32) from the base rows of ``weight`` (any dtype, left as it is)."""
    if method == "mean-subword":
        return mean_subword_rows(weight, base_fast, tokens, n_base)
    if method == "mean":
        return mean_rows(weight, n_base, len(tokens))
    if method == "random":
        return random_rows(weight, n_base, len(tokens), seed)
    raise UserError(f"unknown init method {method!r}")
