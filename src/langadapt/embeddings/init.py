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

Memory and dtype (issue 19): the model is loaded in the dtype it is stored in (``dtype: auto``), so a bf16
model stays bf16 in memory and on disk. Loaded in its stored dtype, transformers leaves the weights in
the copy-on-write mapping of the safetensors file; the copies that remain are (1) the resized embedding
matrices (``resize_token_embeddings`` allocates them and copies the base rows: the mapped ones cannot
grow), held alongside the mapped old ones until the end, since the old output matrix is what the KL
probe scores the base model with and both old matrices are what the base rows are checked against (no
``clone``: resizing allocates new matrices and leaves the old tensors as they were; only when no resize
is needed, the output matrix is copied, since the new rows are then written into it); (2) the new rows
in float32 (computed from the base rows of their pieces, rounded once into the matrix); (3) the
probe's hidden states (in the model's dtype) and the KL's logits, a slice of positions at a time (a bf16
head multiplies in bf16, as the model does: a float32 copy of it would be the size of the model's head).
``save_pretrained`` writes each tensor from its own memory (safetensors 0.8 writes from pointers).
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
from langadapt.models import (
    load_fast_tokenizer,
    load_tokenizer,
    resolve_dtype,
    resolve_model,
    resolve_tokenizer,
    save_model,
)
from langadapt.runtime import load_model, model_device, release_freed_memory, resolve_device, use_bf16
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
    dtype = resolve_dtype(cfg.dtype, model_path)
    model = load_model(model_path, resolve_device(cfg.device), dtype=dtype)
    figures = initialise(model, base_tok, ext_tok, cfg, kl_files, model_path=model_path)
    save_extended(model, ext_tok, out)
    return {**figures, "dtype": str(dtype).removeprefix("torch.")}


def initialise(model: PreTrainedModel, base_tok, ext_tok, cfg: InitConfig, kl_files: list[Path], *,
               model_path: Path) -> dict[str, Any]:  # fmt: skip
    """Resize and initialise ``model`` in place; return the figures stage.json records.

    ``ext_tok`` must extend ``base_tok`` (:func:`langadapt.embeddings.rows.check_extends`, which the
    stage entry runs before any slow work)."""
    plan = plan_rows(base_tok, ext_tok, model.get_input_embeddings().weight.shape[0], cfg.pad_to_multiple_of,
                     str(model_path))
    texts = list(iter_documents(kl_files, cfg.text_field if cfg.kl_corpus else "text", cfg.kl_max_docs))
    probe = probe_hidden(model, base_tok, texts, bf16=use_bf16(cfg.bf16, model_device(model)))
    release_freed_memory()  # the forward passes' activations, before the resized matrices are allocated
    head = model.get_output_embeddings().weight.detach()
    # Resizing allocates new matrices and leaves the old tensors (often the file's mapping) as they were:
    # no copy needed. Without a resize (new tokens all on padding rows) they are written into this matrix.
    base_head = head if plan.rows_after != plan.rows_before else head.clone()
    low, lowest = probe.low_direction(), probe.lowest_projection()
    shift = remedy_shift(cfg, consistent=lowest > 0)
    # padding logits <= -PADDING_LOW at every probe position; zero rows where there is no such direction
    pad_row = -(PADDING_LOW / lowest) * low if lowest > 0 else torch.zeros_like(low)
    tokens = ext_tok.convert_ids_to_tokens(list(plan.new_ids))
    # the base tokenizer's own backend (a fast tokenizer's): a third copy of a 128k vocabulary is ~0.1 GB
    base_fast = getattr(base_tok, "backend_tokenizer", None) or load_fast_tokenizer(model_path)
    extend_model(model, plan, cfg.method, tokens, base_fast, seed=cfg.seed,
                 low=low, shift=shift, pad_row=pad_row, base_out=base_head, probe=probe)  # fmt: skip
    release_freed_memory()
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

    ``base_out`` is the output matrix as it was (the input matrix too when tied; a copy only when no resize
    is needed). New rows are computed in float32 from the base rows, whatever the matrices' dtype, and
    rounded once into the matrix. ``probe``: where the model softcaps its logits, each new row's raw shift
    is the one that lowers its *capped* logit by ``shift`` nats on average (:meth:`Probe.shifts`); without
    a probe or a cap every row moves ``shift`` along ``low``."""
    tied = is_tied(model)
    # the old tensor, not a copy: only its base rows are read, and no write touches them
    old_in = base_out if tied else model.get_input_embeddings().weight.detach()
    old_out = None if tied else base_out
    if plan.rows_after != plan.rows_before:
        # allocation only: every row it adds is overwritten below
        model.resize_token_embeddings(plan.rows_after, mean_resizing=False)
    new, pad = list(plan.new_ids), list(plan.new_padding)
    low, pad_row = low.float(), pad_row.float()  # the rows' arithmetic is float32; one rounding at the end
    with torch.no_grad():
        w_in = model.get_input_embeddings().weight
        rows_in = initial_rows(method, old_in, base_fast, tokens, plan.n_base, seed)
        if tied:
            w_in[new] = (rows_in - _shifts(probe, rows_in, low, shift) * low).to(w_in.dtype)
            w_in[pad] = pad_row.to(w_in.dtype)
        else:
            w_out = model.get_output_embeddings().weight
            rows_out = initial_rows(method, old_out, base_fast, tokens, plan.n_base, seed + 1)
            w_in[new] = rows_in.to(w_in.dtype)
            w_in[pad] = 0.0  # never read: no token id maps to a padding row
            w_out[new] = (rows_out - _shifts(probe, rows_out, low, shift) * low).to(w_out.dtype)
            w_out[pad] = pad_row.to(w_out.dtype)
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
