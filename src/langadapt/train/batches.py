"""Which packed rows each process reads at each optimizer step: a pure function of (seed, step).

Every epoch draws the rows through its own seeded permutation; an optimizer step takes the next
``micro_batch * grad_accum * processes`` rows of it (a remainder too small for a step is dropped), and
process ``p`` reads its contiguous share of them. Because nothing else decides the order, the step number
*is* the data position a checkpoint has to record, and one process with twice the accumulation reads
exactly the rows two processes read together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from langadapt.errors import UserError
from langadapt.train.masking import IGNORE, document_labels


@dataclass(frozen=True)
class StepPlan:
    rows: int
    """Rows in the packed dataset."""
    micro_batch: int
    grad_accum: int
    processes: int
    seed: int

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.processes

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.rows_per_step

    def check(self, folder: str) -> None:
        if self.steps_per_epoch == 0:
            raise UserError(f"packed data has {self.rows} rows, fewer than one optimizer step needs "
                            f"({self.rows_per_step} = micro_batch x grad_accum x processes)", folder)  # fmt: skip

    def step_rows(self, step: int) -> np.ndarray:
        """All rows of optimizer step ``step`` (every process's), in order."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        return order[offset * self.rows_per_step : (offset + 1) * self.rows_per_step]

    def micro_rows(self, step: int, process: int, micro: int) -> np.ndarray:
        """Rows process ``process`` reads for its micro-batch ``micro`` of step ``step``."""
        per_process = self.micro_batch * self.grad_accum
        start = process * per_process + micro * self.micro_batch
        return self.step_rows(step)[start : start + self.micro_batch]


def predicted_tokens(position_ids: np.ndarray | torch.Tensor) -> int:
    """Tokens the loss counts in these rows: all but the first of each row and of each segment.

    The per-step loss is the sum over these tokens divided by their number over the *whole* step (every
    micro-batch of every process), so gradient accumulation and data parallelism give the same update.
    """
    pos = torch.as_tensor(position_ids)
    labels = document_labels(torch.zeros_like(pos), pos)
    return int((labels[:, 1:] != IGNORE).sum())
