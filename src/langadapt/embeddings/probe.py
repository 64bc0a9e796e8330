"""How much new output rows move the model's predictions on text that never uses them.

On text that tokenizes to base tokens only, the extended model's hidden states are the base model's
(base input rows and every other weight are bit-identical), so only the head differs. We run the base
model once, keep its final hidden states, and score any candidate head from them — exact, and cheap
enough to compare remedies. ``KL(base || extended)`` at one position is

    sum over base rows v of p_base(v) * (log p_base(v) - log p_ext(v))

averaged over positions, in nats. Logits are the model's own: a final-logit softcap (Gemma 2, some
Gemma 3) is applied, ``cap * tanh(z / cap)``, so the KL is of the distributions the model predicts.

Softcapping also changes what "start a new output row D nats low" means: lowering the raw logit ``z``
by ``s`` lowers the capped one by only about ``s * (1 - tanh²(z / cap))``. :meth:`Probe.shifts` solves,
per new row, for the raw shift whose mean capped drop over the probe positions is D (without a cap: D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langadapt.runtime import autocast, logit_softcap, model_device, softcap
from langadapt.tokenizer.document import document_start, encode_documents

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHUNK = 1024
LOGITS_PER_CHUNK = 1 << 22
"""Positions x vocabulary scored at a time (16 MB of float32 per tensor; the KL holds about eight): a 128k
vocabulary at 1024 positions would be 0.5 GB per logits tensor, 4 GB in all."""


@dataclass
class Probe:
    hidden: torch.Tensor
    """Final (post-norm) hidden states at every position of the probe text, (positions, dim), in the
    model's dtype (a bf16 model's in float32 would be a copy twice the size with nothing more in it)."""
    cap: float | None = None
    """The model's final-logit softcapping (``runtime.logit_softcap``), None when it has none."""

    def logits(self, h: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """float32 logits. A bf16 / fp16 head multiplies in its own dtype, as the model itself does (float32
        accumulation, logits rounded to the head's dtype): converting it to float32 would copy the whole
        matrix (2 GB for 128k x 4096) for every chunk of positions, and took 2 minutes on a 33k vocabulary."""
        import torch

        if head.dtype in (torch.bfloat16, torch.float16):
            return softcap((h.to(head.dtype) @ head.T).float(), self.cap)
        return softcap(h.float() @ head.float().T, self.cap)

    def shifts(self, rows: torch.Tensor, low: torch.Tensor, nats: float, max_positions: int = 1024,
               iterations: int = 40) -> torch.Tensor:  # fmt: skip
        """Raw shift along ``low`` for each of ``rows`` that lowers its capped logit by ``nats`` on average
        over the probe positions (the first ``max_positions``); ``nats`` for every row without a cap.

        The capped drop grows monotonically with the shift (every h · low > 0 when the remedy applies)
        but is bounded by ``cap + capped logit``: a row that cannot drop ``nats`` (its logit is already
        near ``-cap``, so it takes no mass) gets the largest shift searched, ``nats + 4 * cap / min(h · low)``.
        """
        import torch

        count = rows.shape[0]
        if self.cap is None or nats == 0 or count == 0:
            return torch.full((count,), float(nats))

        h = self.hidden[:max_positions].float()
        along = h @ low.float()  # (positions,), mean about 1
        hi_bound = nats + 4 * self.cap / max(along.min().item(), 1e-3)
        out = torch.empty(count)
        for c in range(0, count, CHUNK):
            z = rows[c : c + CHUNK].float() @ h.T  # (rows, positions)
            before = softcap(z, self.cap)
            lo, hi = torch.zeros(z.shape[0]), torch.full((z.shape[0],), hi_bound)
            for _ in range(iterations):  # bisection, every row at once
                mid = (lo + hi) / 2
                drop = (before - softcap(z - mid[:, None] * along[None, :], self.cap)).mean(1)
                short = drop < nats
                lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
            out[c : c + CHUNK] = hi
        return out

    def low_direction(self) -> torch.Tensor:
        """d with mean(h · d) = 1 over the probe positions: subtracting D·d from an output row lowers its
        logit by D nats on average. Final hidden states share a large mean component (SmolLM2: h·d is
        0.26–1.5, mean 1), so the shift is nearly uniform across positions."""
        import torch

        m = self.hidden.mean(0, dtype=torch.float32)
        return m / (m @ m)

    def lowest_projection(self) -> float:
        """min over positions of h · low_direction(); > 0 means shifting along it lowers every logit."""
        low = self.low_direction()
        return min((h.float() @ low).min().item() for h in self.hidden.split(CHUNK))

    def measure(self, base_head: torch.Tensor, ext_head: torch.Tensor, n_base: int,
                n_ext: int) -> dict[str, float]:  # fmt: skip
        """KL(base || ext), and the probability mass the extended head puts on new tokens and on padding."""
        import torch

        rows_base = base_head.shape[0]
        kl = new_mass = pad_mass = 0.0
        step = max(1, min(CHUNK, LOGITS_PER_CHUNK // ext_head.shape[0]))
        with torch.inference_mode():
            for c in range(0, len(self.hidden), step):
                h = self.hidden[c : c + step].float()
                lp_b = torch.log_softmax(self.logits(h, base_head), -1)
                lp_e = torch.log_softmax(self.logits(h, ext_head), -1)
                kl += (lp_b.exp() * (lp_b - lp_e[:, :rows_base])).sum().item()
                p_e = lp_e.exp()
                new_mass += p_e[:, n_base:n_ext].sum().item()
                pad_mass += p_e[:, n_ext:].sum().item()
        n = len(self.hidden)
        return {"english_kl": kl / n, "english_new_token_mass": new_mass / n, "english_padding_mass": pad_mass / n}


def probe_hidden(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                 max_len: int = 512, bf16: bool = False) -> Probe:  # fmt: skip
    """Final hidden states of ``model`` on ``texts`` (each after the document-start token, cut at max_len).

    bf16 autocast is fine here: base and extended heads are scored from the same hidden states, so
    their rounding does not bias the KL between them."""
    import torch


    start = document_start(tokenizer)
    states = []
    device = model_device(model)
    with torch.inference_mode(), autocast(device, bf16):
        for ids in encode_documents(tokenizer, texts, start):
            x = torch.tensor([ids[:max_len]], device=device)
            # position 0 is the start token; its prediction is of the first token, so keep it
            states.append(model.base_model(input_ids=x).last_hidden_state[0].to(model.dtype))
    return Probe(torch.cat(states), cap=logit_softcap(model))
