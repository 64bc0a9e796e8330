"""``embeddings init``: resize a model to an extended tokenizer and give every new row a value.

New token rows: ``mean-subword`` (SambaLingo; input rows from input rows, an untied head's output rows
from output rows), ``mean`` or ``random`` (ablations). We never use ``resize_token_embeddings``'
initialisation (transformers 5 draws from a multivariate normal, "mean_resizing"): it only allocates,
and every row it adds is overwritten here; base rows are checked bit-identical before saving.

Output remedy ("shift"): a new output row takes probability mass from base tokens even on English. Final
hidden states share a large mean direction, so subtracting ``D · d`` (``Probe.low_direction``) from a
new output row lowers its logit by about D nats everywhere: its mass on English drops by e^D while the
ranking among new tokens, which the Hungarian text needs, is kept. With a tied matrix the row is also
the input vector; the same shift moves it by only D/|mean h| (~2/37 of a row norm of ~3 on SmolLM2),
which we measured to barely change what the model reads (bench/RESULTS.md), so the remedy applies to
both heads. New padding rows get a large shift (logit <= -100 on the probe text) so they take no
measurable mass; ``stage.json`` records the mass measured.

Softcapped heads (Gemma 2's ``final_logit_softcapping``): the probe scores the capped logits the model
predicts, and each new row's raw shift is solved so that its *capped* logit drops by D nats on average
(``Probe.shifts``); a plain shift of D would lower logits in the cap's curved range by less.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from langadapt.config import InitConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.embeddings.probe import Probe, probe_hidden
from langadapt.embeddings.rows import RowPlan, check_extends, initial_rows, plan_rows
from langadapt.models import load_fast_tokenizer, load_tokenizer, resolve_model, resolve_tokenizer, save_model
from langadapt.runtime import load_model, model_device, resolve_device, use_bf16
from langadapt.train.trainable import is_tied

DEMO_ENGLISH = Path(__file__).resolve().parents[1] / "demo_data" / "en-valid.jsonl.gz"
#: A new padding row's logit is at most -PADDING_LOW at every probe position.
PADDING_LOW = 100.0


def init_embeddings(cfg: InitConfig, out: Path) -> dict[str, Any]:
    """Stage entry: write an extended, initialised model folder into ``out``; return the figures."""
    model_path, tok_path = resolve_model(cfg.model), resolve_tokenizer(cfg.tokenizer)
    kl_files = check_corpus(cfg.kl_corpus, cfg.text_field) if cfg.kl_corpus else [DEMO_ENGLISH]
    base_tok, ext_tok = load_tokenizer(model_path), load_tokenizer(tok_path)
    check_extends(base_tok, ext_tok, str(tok_path))  # before any slow work
    model = load_model(model_path, resolve_device(cfg.device))
    figures = initialise(model, base_tok, ext_tok, cfg, kl_files, model_path=model_path)
    save_extended(model, ext_tok, out)
    return figures


def initialise(model: PreTrainedModel, base_tok, ext_tok, cfg: InitConfig, kl_files: list[Path], *,
               model_path: Path) -> dict[str, Any]:  # fmt: skip
    """Resize and initialise ``model`` in place; return the figures stage.json records.

    ``ext_tok`` must extend ``base_tok`` (:func:`langadapt.embeddings.rows.check_extends`, which the
    stage entry runs before any slow work)."""
    plan = plan_rows(base_tok, ext_tok, model.get_input_embeddings().weight.shape[0], cfg.pad_to_multiple_of,
                     str(model_path))
    texts = list(iter_documents(kl_files, cfg.text_field if cfg.kl_corpus else "text", cfg.kl_max_docs))
    probe = probe_hidden(model, base_tok, texts, bf16=use_bf16(cfg.bf16, model_device(model)))
    base_head = model.get_output_embeddings().weight.detach().clone()
    low, lowest = probe.low_direction(), probe.lowest_projection()
    shift = remedy_shift(cfg, consistent=lowest > 0)
    # padding logits <= -PADDING_LOW at every probe position; zero rows where there is no such direction
    pad_row = -(PADDING_LOW / lowest) * low if lowest > 0 else torch.zeros_like(low)
    tokens = ext_tok.convert_ids_to_tokens(list(plan.new_ids))
    extend_model(model, plan, cfg.method, tokens, load_fast_tokenizer(model_path), seed=cfg.seed,
                 low=low, shift=shift, pad_row=pad_row, base_out=base_head, probe=probe)  # fmt: skip
    return {
        "method": cfg.method, "output_remedy": "shift" if shift else "none", "output_shift_nats": shift,
        "logit_softcap": probe.cap,
        "tied": is_tied(model), "n_base": plan.n_base, "n_ext": plan.n_ext, "rows_before": plan.rows_before,
        "rows_after": plan.rows_after, "new_token_rows": len(plan.new_ids),
        "reused_padding_rows": plan.reused_rows, "new_padding_rows": len(plan.new_padding),
        "probe_positions": len(probe.hidden), "probe_corpus": [str(f) for f in kl_files],
        **probe.measure(base_head, model.get_output_embeddings().weight, plan.n_base, plan.n_ext),
    }  # fmt: skip


def remedy_shift(cfg: InitConfig, *, consistent: bool) -> float:
    """Nats by which new output rows start lower (0: no remedy).

    ``auto`` shifts only when the probe's mean hidden direction lowers the logit at every position
    (true for trained models; a random test model has no such direction and the shift would be noise).
    """
    if cfg.output_remedy == "shift" or (cfg.output_remedy == "auto" and consistent):
        return cfg.output_shift
    return 0.0


def extend_model(model: PreTrainedModel, plan: RowPlan, method: str, tokens: list[str], base_fast, *,
                 seed: int, low: torch.Tensor, shift: float, pad_row: torch.Tensor,
                 base_out: torch.Tensor, probe: Probe | None = None) -> None:  # fmt: skip
    """Resize ``model`` to ``plan.rows_after`` rows and set every new token and new padding row.

    ``base_out`` is the caller's copy of the output matrix as it was (the input matrix too when tied):
    one copy of a vocabulary-sized matrix fewer. ``probe``: where the model softcaps its logits, each new
    row's raw shift is the one that lowers its *capped* logit by ``shift`` nats on average
    (:meth:`Probe.shifts`); without a probe or a cap every row moves ``shift`` along ``low``."""
    tied = is_tied(model)
    old_in = base_out if tied else model.get_input_embeddings().weight.detach().clone()
    old_out = None if tied else base_out
    if plan.rows_after != plan.rows_before:
        # allocation only: every row it adds is overwritten below
        model.resize_token_embeddings(plan.rows_after, mean_resizing=False)
    new, pad = list(plan.new_ids), list(plan.new_padding)
    low, pad_row = low.to(old_in.dtype), pad_row.to(old_in.dtype)
    with torch.no_grad():
        w_in = model.get_input_embeddings().weight
        rows_in = initial_rows(method, old_in, base_fast, tokens, plan.n_base, seed)
        if tied:
            w_in[new] = rows_in - _shifts(probe, rows_in, low, shift) * low
            w_in[pad] = pad_row
        else:
            w_out = model.get_output_embeddings().weight
            rows_out = initial_rows(method, old_out, base_fast, tokens, plan.n_base, seed + 1)
            w_in[new] = rows_in
            w_in[pad] = 0.0  # never read: no token id maps to a padding row
            w_out[new] = rows_out - _shifts(probe, rows_out, low, shift) * low
            w_out[pad] = pad_row
    model.config.vocab_size = plan.rows_after
    _check_base_rows(model, old_in, old_out, plan.n_base)


def _shifts(probe: Probe | None, rows: torch.Tensor, low: torch.Tensor, shift: float) -> torch.Tensor | float:
    """``shift`` (a column of per-row raw shifts where the model softcaps its logits)."""
    if probe is None or probe.cap is None or shift == 0:
        return shift
    return probe.shifts(rows, low, shift).to(rows.dtype)[:, None]


def _check_base_rows(model, old_in, old_out, n_base: int) -> None:
    same = torch.equal(model.get_input_embeddings().weight[:n_base], old_in[:n_base])
    if old_out is not None:
        same = same and torch.equal(model.get_output_embeddings().weight[:n_base], old_out[:n_base])
    if not same:  # a bug, not bad input: keep the traceback
        raise AssertionError("base embedding rows changed during init")


def save_extended(model: PreTrainedModel, tokenizer, folder: Path) -> None:

    # generation must be able to stop and pad with ids the new tokenizer knows
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, tokenizer, folder)
