"""Configs of the training stages (``train pretrain``, ``train sft``, ``train dpo``)."""

from __future__ import annotations

from dataclasses import dataclass

from langadapt.config.base import (
    ConfigError,
    Runtime,
    TextField,
    check_choice,
    check_max,
    parse_report_to,
    path,
    paths,
)


@dataclass(kw_only=True)
class PretrainConfig(TextField, Runtime):
    model: str = path()
    """Model folder to continue training (from embeddings init / distill)."""
    data: str = path()
    """Packed dataset folder (from data pack)."""
    eval_target: list[str] = paths()
    """Held-out target-language text for bits-per-byte evaluation."""
    eval_english: list[str] = paths()
    """Held-out English text for bits-per-byte evaluation."""
    train: str = "full"
    """What trains: a comma-separated union of full, embeddings, new-embeddings (only the rows the tokenizer added) and module-name patterns, e.g. 'new-embeddings,layers,norm'."""
    lr: float = 1e-4
    """Peak learning rate (SambaLingo: 1e-4)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a share of the peak (cosine decay)."""
    warmup: float = 0.01
    """Warm-up, as a share of the steps (< 1) or a number of steps (>= 1)."""
    weight_decay: float = 0.1
    """AdamW weight decay (SambaLingo: 0.1)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0: off)."""
    micro_batch: int = 4
    """Rows per forward pass."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_steps: int | None = None
    """Optimizer steps (None: one epoch over the packed data)."""
    max_minutes: float | None = None
    """Stop after this many minutes (the schedule is planned for max_steps)."""
    compile: bool = False
    """torch.compile the model."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    attention: str = "auto"
    """Document-masked attention kernel: auto, sdpa, flex or flash."""
    eval_every: int = 0
    """Steps between bits-per-byte evaluations on eval_target / eval_english, also run after the last step;
    the best evaluated weights become final/ (0: none, final/ is the last weights; a recipe's eval stage
    scores them)."""
    eval_max_docs: int = 64
    """Documents per evaluation corpus."""
    select_metric: str = "target_bpb"
    """Metric that picks the best checkpoint (lower is better)."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: none but the final one)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    report_to: str = "auto"
    """accelerate trackers: auto (every one installed of tensorboard and wandb), none, or a comma-separated list. TensorBoard writes into the run folder's pretrain/."""
    seed: int = 0
    """Seed for initialisation of anything random and for data order."""

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.micro_batch <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch and grad_accum must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("max_steps must be > 0")
        check_choice("attention", self.attention, ("auto", "sdpa", "flex", "flash"))
        check_choice("select_metric", self.select_metric, ("target_bpb", "english_bpb"))
        parse_report_to(self.report_to)
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ConfigError("keep_checkpoints must be >= 1; checkpoint_every and eval_every >= 0")


@dataclass(kw_only=True)
class AlignConfig(TextField, Runtime):
    """What ``train sft`` and ``train dpo`` share (each redeclares the defaults SambaLingo sets for it)."""

    model: str = path()
    """Model folder to fine-tune (SFT: the run's last model; DPO: the SFT stage's final/ folder)."""
    data: list[str] = paths()
    """English training data: chat jsonl[.gz] / parquet / datasets folder (SFT: {"messages": [...]}; DPO:
    {"chosen", "rejected"[, "prompt"]}, plain text or messages)."""
    translated: list[str] = paths()
    """The same kind of data in the target language (e.g. machine-translated); mixed in by ratio."""
    ratio: float = 0.5
    """Share of translated examples in the mix, from 0 (English only) to 1 (translated only)."""
    mix_strategy: str = "first_exhausted"
    """datasets.interleave_datasets stopping strategy: first_exhausted (stop when a source runs out),
    all_exhausted (oversample the smaller) or all_exhausted_without_replacement."""
    max_examples: int | None = None
    """Examples read per source at most, the first ones of its files (None: all)."""
    chat_template: str = path()
    """Jinja file of the chat template with {% generation %} markers, for a model whose template langadapt
    cannot mark itself (empty: the model's own; SambaLingo's plain-text format where it has none)."""
    max_length: int = 2048
    """Tokens per sequence at most (longer ones are truncated; with packing, the packed row length)."""
    lr: float = 2e-5
    """Peak learning rate."""
    epochs: float = 1.0
    """Passes over the mixed data (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Optimizer steps (None: epochs)."""
    micro_batch: int = 4
    """Examples per device per forward pass (DPO: pairs)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = micro_batch x grad_accum x processes)."""
    warmup: float = 0.1
    """Warm-up, as a share of the steps (< 1) or a number of steps (>= 1)."""
    scheduler: str = "linear"
    """transformers lr_scheduler_type: linear (decay to 0, SambaLingo), cosine, constant_with_warmup, ..."""
    weight_decay: float = 0.0
    """AdamW weight decay (never on norms, biases or row-frozen embedding matrices)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0: off)."""
    train: str = "full"
    """What trains without LoRA: full, or a comma-separated union of embeddings, new-embeddings (only the
    rows the tokenizer added, the rest bit-identical) and module-name patterns, as in train pretrain."""
    lora: bool = False
    """Train LoRA adapters (peft, `pip install "langadapt[lora]"`) instead of the weights; the new token
    rows of an extended tokenizer train too. final/ holds the merged model."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target: str = "all-linear"
    """Modules that get adapters: all-linear or a comma-separated list of module names (q_proj,v_proj)."""
    attention: str = "auto"
    """Attention kernel: auto (FlashAttention 2 on a GPU when flash-attn is installed, else sdpa), sdpa,
    eager, flash_attention_2 or flash_attention_3."""
    eval_english: list[str] = paths()
    """Held-out English text: bits per byte before and after training (the English-quality check)."""
    eval_target: list[str] = paths()
    """Held-out target-language text: bits per byte before and after training."""
    eval_max_docs: int = 64
    """Documents per evaluation corpus."""
    english_tolerance: float = 0.02
    """A rise of English bits per byte above this share of its value before training is reported as a
    regression (stage.json english_regressed and a warning)."""
    checkpoint_every: int = 0
    """Steps between checkpoints in the work folder, from which an interrupted run resumes (0: none)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (trl turns it on by default; here it is off unless asked)."""
    report_to: str = "none"
    """Trainer loggers: none, auto (every one installed of tensorboard and wandb), or a comma-separated list."""
    seed: int = 0
    """Seed for initialisation, the mix and the data order."""

    def validate(self) -> None:
        if not 0 <= self.ratio <= 1:
            raise ConfigError(f"ratio must be between 0 and 1 (the share of translated examples), not {self.ratio}")
        check_choice("mix_strategy", self.mix_strategy,
                     ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement"))  # fmt: skip
        check_choice("attention", self.attention, ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"))
        if self.lr <= 0 or self.epochs <= 0 or self.max_length <= 1:
            raise ConfigError("lr and epochs must be > 0 and max_length > 1")
        if self.micro_batch <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch and grad_accum must be > 0")
        check_max("max_steps", self.max_steps, "epochs")
        check_max("max_examples", self.max_examples)
        if self.warmup < 0 or self.eval_max_docs <= 0 or self.checkpoint_every < 0:
            raise ConfigError("warmup must be >= 0, eval_max_docs > 0 and checkpoint_every >= 0")
        if self.lora and self.train != "full":
            raise ConfigError("train applies without LoRA only (with lora, the adapters and the new token rows train)")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_r and lora_alpha must be > 0 and lora_dropout in [0, 1)")
        parse_report_to(self.report_to)


@dataclass(kw_only=True)
class SftConfig(AlignConfig):
    packing: bool = False
    """Pack several examples into each max_length row with document masking (trl's bfd packing, padding-free:
    FlashAttention varlen on a GPU, position-id masks on sdpa/eager)."""


@dataclass(kw_only=True)
class DpoConfig(AlignConfig):
    ratio: float = 0.1
    """Share of translated preference pairs in the mix, from 0 (English only) to 1 (SambaLingo: ~10%)."""
    lr: float = 5e-7
    """Peak learning rate (SambaLingo: 5e-7)."""
    epochs: float = 3.0
    """Passes over the mixed pairs (SambaLingo: 3; ignored when max_steps is set)."""
    beta: float = 0.1
    """DPO beta: how far the policy may move from the reference (SambaLingo: 0.1)."""
    precompute_ref_log_probs: bool = True
    """Score every pair with the reference once before training, so no second model stays in memory."""
    eval_pairs: int = 64
    """Training pairs on which reward margin and preference accuracy are measured before and after."""

    def validate(self) -> None:
        if self.beta <= 0 or self.eval_pairs <= 0:
            raise ConfigError("beta and eval_pairs must be > 0")
