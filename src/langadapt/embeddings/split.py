"""Train only the new rows of an embedding matrix: a separate parameter, not a gradient mask.

Why a separate parameter: with a mask, the base rows are still part of the optimised tensor, and AdamW's
decoupled weight decay (``p -= lr * wd * p``), a momentum buffer from any earlier step, or a fused
optimizer kernel would still move them — a mask has to be re-applied to every one of those paths to keep
them bit-identical. Here the base rows are a frozen buffer that no optimizer ever sees, so they cannot
change, the optimizer state is only ``new rows × dim`` (not the whole 49k-row matrix), and a tied head
simply reads the same new-rows parameter as the input, so its gradient gets both contributions exactly
as the tied model would. The cost is one ``torch.cat`` of the matrix per forward, small next to the
transformer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class SplitRows(nn.Module):
    """A (rows, dim) matrix = frozen rows [0, start) + trainable ``new`` + frozen rows [stop, rows)."""

    def __init__(self, weight: torch.Tensor, start: int, stop: int, new: nn.Parameter) -> None:
        super().__init__()
        self.register_buffer("head", weight[:start].detach(), persistent=False)
        self.register_buffer("tail", weight[stop:].detach(), persistent=False)
        self.new = new

    def matrix(self) -> torch.Tensor:
        return torch.cat([self.head, self.new, self.tail])


class SplitEmbedding(SplitRows):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.matrix())


class SplitHead(SplitRows):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self.matrix().to(hidden.dtype))


def is_tied(model: PreTrainedModel) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


@contextlib.contextmanager
def new_rows_trainable(
    model: PreTrainedModel, start: int, stop: int, *, head: bool
) -> Iterator[tuple[list[nn.Parameter], SplitHead | None]]:
    """Inside the block only rows [start, stop) are trainable: of the input matrix, and with ``head``
    of the output matrix too (the same parameter when tied). Yields (parameters, head module to compute
    logits with, or None); on exit the trained rows are written back into the model's own matrices."""
    model.requires_grad_(False)
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = is_tied(model)
    new_in = nn.Parameter(emb.weight[start:stop].detach().clone())
    params = [new_in]
    split_head = None
    if head:
        new_out = new_in if tied else nn.Parameter(out.weight[start:stop].detach().clone())
        if not tied:
            params.append(new_out)
        split_head = SplitHead(out.weight, start, stop, new_out)
    model.set_input_embeddings(SplitEmbedding(emb.weight, start, stop, new_in))
    try:
        yield params, split_head
    finally:
        model.set_input_embeddings(emb)
        with torch.no_grad():
            emb.weight[start:stop] = new_in.detach()
            if split_head is not None and not tied:
                out.weight[start:stop] = split_head.new.detach()
