"""``train sft``: supervised fine-tuning on chat data with trl's SFTTrainer, English and translated mixed.

trl tokenizes through the chat template and computes the loss on the assistant turns only
(``assistant_only_loss``: transformers' ``{% generation %}`` mask, each reply and its end-of-turn token),
packs with best-fit decreasing and document masking when ``packing`` is on (padding-free rows:
FlashAttention varlen on a GPU, a block-diagonal mask from the position ids on sdpa / eager), and runs
under ``accelerate launch`` with the shared configs in ``configs/accelerate/``. Everything else is
:mod:`langadapt.train.align`. The work folder ``out``::

    final/         HF folder: the fine-tuned model, its tokenizer and chat template (LoRA merged)
    metrics.jsonl  trl's log, one record per step
    trainer/       checkpoints (checkpoint_every), from which an unfinished run resumes
    before.json    English (and target) bits per byte before training
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langadapt.config import SftConfig
from langadapt.train import align


def build_trainer(cfg: SftConfig, work: Path) -> tuple[Any, align.Setup, dict[str, Any]]:
    """The SFTTrainer with its prepared (tokenized, masked, packed) data; bad input fails before the model loads."""
    from trl import SFTConfig, SFTTrainer

    dataset, mix, s = align.prepare(cfg, "chat")
    args = align.trainer_args(SFTConfig, cfg, work, s, assistant_only_loss=True, packing=cfg.packing,
                              packing_strategy="bfd", shuffle_dataset=False)  # fmt: skip
    trainer = SFTTrainer(model=s.model, args=args, train_dataset=dataset, processing_class=s.tokenizer,
                         peft_config=s.peft_config)  # fmt: skip
    align.attach_row_freeze(trainer, s)
    return trainer, s, mix


def sft(cfg: SftConfig, out: Path) -> dict[str, Any]:
    """Stage entry: fine-tune ``cfg.model`` on the mixed chat data into ``out/final``; the figures."""
    out = Path(out)
    trainer, s, mix = build_trainer(cfg, out)
    start = align.before(out, lambda: align.english_bpb(s.model.to(s.device), s.tokenizer, s.eval_texts, s.bf16,
                                                        cfg.max_length))  # fmt: skip
    figures = align.train(trainer, out)
    final = align.save_final(trainer, s, out)
    after = align.after_bpb(final, cfg, s)
    return {**figures, **align.compare(start, after, cfg.english_tolerance), "mix": mix, "packing": cfg.packing,
            "packed_rows": len(trainer.train_dataset) if cfg.packing else None,
            **align.row_freeze_result(trainer), **align.common_figures(s, s.model.config._attn_implementation)}  # fmt: skip
