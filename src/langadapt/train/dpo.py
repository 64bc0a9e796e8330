"""``train dpo``: direct preference optimisation with trl's DPOTrainer, from the SFT model on disk.

The policy is loaded from the model folder (in a recipe: ``sft/final``), so trl's reference model,
which it reloads from the policy's ``_name_or_path``, is that same folder with the same (extended)
vocabulary; an in-memory adapted model would get a reference from wherever its config points.
With ``precompute_ref_log_probs`` (the default) trl scores every pair with the untrained policy once
before training and keeps no reference model at all; with LoRA the reference is the model with the
adapters disabled. Reward margin and preference accuracy (trl's ``rewards/margins`` and
``rewards/accuracies``) are measured on the first ``eval_pairs`` training pairs before and after, and
English bits per byte before and after, so DPO cannot silently cost English quality.
The work folder holds what train sft's does (final/, metrics.jsonl, trainer/, before.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langadapt.config import DpoConfig
from langadapt.train import align


def build_trainer(cfg: DpoConfig, work: Path) -> tuple[Any, align.Setup, dict[str, Any]]:
    """The DPOTrainer with its tokenized pairs (and reference log-probs); bad input fails before the model loads."""
    from trl import DPOConfig, DPOTrainer

    dataset, mix, s = align.prepare(cfg, "preference")
    args = align.trainer_args(DPOConfig, cfg, work, s, beta=cfg.beta, eval_strategy="no",
                              precompute_ref_log_probs=cfg.precompute_ref_log_probs)  # fmt: skip
    dataset = align.shared_on_disk(dataset, work / align.DATA, args)  # trl's reference cache, under DDP
    pairs = dataset.select(range(min(cfg.eval_pairs, len(dataset))))
    trainer = DPOTrainer(model=s.model, args=args, train_dataset=dataset, eval_dataset=pairs,
                         processing_class=s.tokenizer, peft_config=s.peft_config)  # fmt: skip
    align.attach_row_freeze(trainer, s)
    return trainer, s, mix


def reference(trainer: Any, s: align.Setup) -> dict[str, Any]:
    """Which model the rewards are measured against, and its vocabulary (it must be the policy's)."""
    rows = s.model.get_input_embeddings().weight.shape[0]
    if trainer.ref_model is not None:
        ref = trainer.accelerator.unwrap_model(trainer.ref_model)
        ref_rows = ref.get_input_embeddings().weight.shape[0]
        kind, source = "model", ref.config._name_or_path
    else:
        ref_rows = rows
        kind = "adapters disabled" if s.peft_config is not None else "policy before training (precomputed)"
        source = str(s.model_dir)
    if ref_rows != rows:
        raise RuntimeError(f"DPO reference has {ref_rows} embedding rows, the policy {rows} (a bug: report it)")
    return {"reference": kind, "reference_model": source, "reference_vocab_rows": ref_rows}


def rewards(trainer: Any) -> dict[str, float]:
    """trl's reward margin and preference accuracy on the eval pairs (the first training pairs)."""
    metrics = trainer.evaluate()
    return {"reward_margin": metrics["eval_rewards/margins"], "reward_accuracy": metrics["eval_rewards/accuracies"]}


def dpo(cfg: DpoConfig, out: Path) -> dict[str, Any]:
    """Stage entry: DPO of ``cfg.model`` on the mixed preference pairs into ``out/final``; the figures."""
    out = Path(out)
    trainer, s, mix = build_trainer(cfg, out)

    def measure() -> dict[str, Any]:
        bpb = align.english_bpb(s.model.to(s.device), s.tokenizer, s.eval_texts, s.bf16, cfg.max_length)
        return {**bpb, **rewards(trainer)}

    start = align.before(out, measure)
    figures = align.train(trainer, out)
    end = rewards(trainer)
    final = align.save_final(trainer, s, out)
    bpb_before = {k: v for k, v in start.items() if k.endswith("_bpb")}
    compared = align.compare(bpb_before, align.after_bpb(final, cfg, s), cfg.english_tolerance)
    return {**figures, **compared, "reward_margin_before": start["reward_margin"],
            "reward_margin_after": end["reward_margin"], "reward_accuracy_before": start["reward_accuracy"],
            "reward_accuracy_after": end["reward_accuracy"], "eval_pairs": len(trainer.eval_dataset),
            "beta": cfg.beta, "precompute_ref_log_probs": cfg.precompute_ref_log_probs, "mix": mix,
            **reference(trainer, s), **align.row_freeze_result(trainer),
            **align.common_figures(s, s.model.config._attn_implementation)}  # fmt: skip
