"""Configs of the embedding stages (``embeddings init``, ``embeddings distill``)."""

from __future__ import annotations

from dataclasses import dataclass

from langadapt.config.base import ConfigError, Runtime, TextField, check_choice, parse_report_to, path, paths
from langadapt.models import DTYPES


@dataclass(kw_only=True)
class InitConfig(TextField, Runtime):
    model: str = path()
    """Base model alias or folder (recipe: the recipe's base_model)."""
    tokenizer: str = path()
    """Extended tokenizer folder (from tokenizer extend)."""
    method: str = "mean-subword"
    """mean-subword (SambaLingo), mean (of all base rows) or random (normal, base rows' std)."""
    output_remedy: str = "auto"
    """How new output rows are kept from taking probability mass on text without new tokens: shift
    (start their logits ``output_shift`` nats lower along the mean hidden direction), none, or auto
    (= shift, the measured better one; bench/RESULTS.md)."""
    output_shift: float = 2.0
    """Nats by which the shift remedy lowers new output rows' logits on average."""
    pad_to_multiple_of: int | None = 64
    """Round the embedding matrix rows up to a multiple of this (None: exactly len(tokenizer))."""
    seed: int = 0
    """Seed for the random method."""
    kl_corpus: list[str] = paths()
    """English text on which KL(base || extended) of next-token distributions is measured."""
    kl_max_docs: int = 16
    """Documents used for the KL measurement."""
    dtype: str = "auto"
    """dtype the model is loaded, extended and saved in: auto (the one it is stored in, config.json's dtype),
    float32, bfloat16 or float16. New rows are computed in float32 and rounded once."""

    def validate(self) -> None:
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("method", self.method, ("mean-subword", "mean", "random"))
        check_choice("output_remedy", self.output_remedy, ("auto", "shift", "none"))
        if self.output_shift < 0:
            raise ConfigError("output_shift must be >= 0")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of <= 0:
            raise ConfigError("pad_to_multiple_of must be > 0")


@dataclass(kw_only=True)
class DistillConfig(TextField, Runtime):
    model: str = path()
    """Initialised extended model folder (from embeddings init)."""
    teacher: str = path()
    """The original model, reading the original tokenization (recipe: the recipe's base_model)."""
    corpus: list[str] = paths()
    """Target-language text."""
    steps: int = 100
    """Distillation steps (stage 1: new input rows, L2 on last hidden states)."""
    calibrate_steps: int = 50
    """LM-head calibration steps (stage 2: new input + output rows, next-token loss)."""
    lr: float = 3e-3
    """Learning rate of stage 1 (distillation); 3e-3 beat 1e-3 at the demo's 30 steps (bench/RESULTS.md)."""
    calibrate_lr: float | None = None
    """Learning rate of stage 2 (None: lr / 10). Adam moves every new output row by ~lr per step even
    when its token never occurs, so a stage-1 rate here pushes all new logits down and hurts the target."""
    batch_size: int = 8
    """Spans per step."""
    seq_len: int = 128
    """Longest span, in teacher tokens."""
    seed: int = 0
    """Seed for data order and anything random."""
    warmup: float = 0.1
    """Warm-up of each stage, as a share of its steps (< 1) or a number of steps (>= 1)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of each stage as a share of its peak (cosine decay)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0: off)."""
    checkpoint_every: int = 50
    """Steps between resumable checkpoints."""
    report_to: str = "auto"
    """accelerate trackers: auto (every one installed of tensorboard and wandb), none, or a comma-separated list."""
    dtype: str = "auto"
    """dtype the student and the teacher are loaded in and the model is saved in: auto (the one each is
    stored in), float32, bfloat16 or float16. The rows that train always have float32 master copies."""

    def validate(self) -> None:
        check_choice("dtype", self.dtype, DTYPES)
        if self.steps <= 0:
            raise ConfigError("steps must be > 0")
        if self.calibrate_steps < 0:
            raise ConfigError("calibrate_steps must be >= 0")
        if self.lr <= 0 or (self.calibrate_lr is not None and self.calibrate_lr <= 0):
            raise ConfigError("lr and calibrate_lr must be > 0")
        if self.batch_size <= 0 or self.seq_len <= 1 or self.checkpoint_every <= 0:
            raise ConfigError("batch_size and checkpoint_every must be > 0, seq_len > 1")
        parse_report_to(self.report_to)
