"""How much new output rows move the model's predictions on text that never uses them.

On text that tokenizes to base tokens only, the extended model's hidden states are the base model's
(base input rows and every other weight are bit-identical), so only the head differs. We run the base
model once, keep its final hidden states, and score any candidate head from them — exact, and cheap
enough to compare remedies. ``KL(base || extended)`` at one position is

    sum over base rows v of p_base(v) * (log p_base(v) - log p_ext(v))

averaged over positions, in nats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CHUNK = 1024


@dataclass
class Probe:
    hidden: torch.Tensor
    """Final (post-norm) hidden states at every position of the probe text, (positions, dim)."""

    def low_direction(self) -> torch.Tensor:
        """d with mean(h · d) = 1 over the probe positions: subtracting D·d from an output row lowers its
        logit by D nats on average. Final hidden states share a large mean component (SmolLM2: h·d is
        0.26–1.5, mean 1), so the shift is nearly uniform across positions."""
        m = self.hidden.float().mean(0)
        return m / (m @ m)

    def lowest_projection(self) -> float:
        """min over positions of h · low_direction(); > 0 means shifting along it lowers every logit."""
        return (self.hidden.float() @ self.low_direction()).min().item()

    def measure(self, base_head: torch.Tensor, ext_head: torch.Tensor, n_base: int,
                n_ext: int) -> dict[str, float]:  # fmt: skip
        """KL(base || ext), and the probability mass the extended head puts on new tokens and on padding."""
        import torch

        rows_base = base_head.shape[0]
        kl = new_mass = pad_mass = 0.0
        with torch.inference_mode():
            for c in range(0, len(self.hidden), CHUNK):
                h = self.hidden[c : c + CHUNK].float()
                lp_b = torch.log_softmax(h @ base_head.float().T, -1)
                lp_e = torch.log_softmax(h @ ext_head.float().T, -1)
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

    from langadapt.eval.bpb import document_start, encode_documents
    from langadapt.runtime import autocast, model_device

    start = document_start(tokenizer)
    states = []
    device = model_device(model)
    with torch.inference_mode(), autocast(device, bf16):
        for ids in encode_documents(tokenizer, texts, start):
            x = torch.tensor([ids[:max_len]], device=device)
            # position 0 is the start token; its prediction is of the first token, so keep it
            states.append(model.base_model(input_ids=x).last_hidden_state[0].float())
    return Probe(torch.cat(states))
