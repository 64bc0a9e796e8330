"""One dataclass per stage; a recipe YAML maps onto them 1:1.

Each field carries a docstring (the recipe reference in docs/recipes.md is generated from them). Input
paths of a stage are optional in a recipe: the runner fills them from the recipe's ``data`` section and
from the folders of earlier stages. An unknown or misspelled key is an error naming the key and the file,
so a run never trains on silently ignored settings.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.errors import UserError


class ConfigError(UserError):
    """A recipe or flag value that does not make sense."""


PATH = {"path": True}
"""Field metadata of a path field: a recipe resolves it against the recipe's folder, the runner fills it
from the data section and earlier stages (``dataclasses.field(..., metadata=PATH)``)."""


def paths() -> Any:
    """A list-of-paths field (input files, globs or folders), empty by default."""
    return field(default_factory=list, metadata=PATH)


def path(default: str = "") -> Any:
    """A single-path field (a model, tokenizer or data folder, or a model alias)."""
    return field(default=default, metadata=PATH)


def is_path_field(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("path"))


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """``name must be a, b or c, not 'x'`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}" if len(choices) > 1 else str(choices[0])
        raise ConfigError(f"{name} must be {listed}, not {value!r}")


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (the runtime resolves it; checked here, before any work)."""
    if device not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")


# --------------------------------------------------------------------------------------------- stages


@dataclass(kw_only=True)
class PrepareConfig:
    input: list[str] = paths()
    """Files or globs of raw text (txt / jsonl[.gz] / parquet / datasets folder)."""
    lang: str = ""
    """ISO 639-1 code of the language to keep (empty: the recipe's target_lang)."""
    text_field: str = "text"
    """Field or column that holds the text in jsonl / parquet / datasets input."""
    executor: str = "local"
    """datatrove executor: local, slurm or ray."""
    workers: int = 1
    """Worker processes of the local executor (-1: one per core)."""
    tasks: int = 1
    """Number of datatrove tasks (input shards processed independently)."""
    normalize: bool = True
    """Unicode NFC, whitespace clean-up, mojibake repair; URLs and e-mails replaced by placeholders."""
    url_placeholder: str = "<URL>"
    """What a URL is replaced with ('' keeps URLs)."""
    email_placeholder: str = "<EMAIL>"
    """What an e-mail address is replaced with ('' keeps them)."""
    min_script_ratio: float = 0.6
    """Share of letters that must be in the language's script(s)."""
    language_id: bool = True
    """Drop documents whose identified language is not ``lang`` (py3langid, shipped in its wheel)."""
    min_language_score: float = 0.5
    """Lowest language-id confidence kept."""
    quality_filter: bool = True
    """Too-short and Gopher-style repetition filters, with defaults suited to non-English text."""
    min_words: int = 10
    """Documents with fewer words (letters/2 for scripts written without spaces: ja, zh, th) are dropped."""
    boilerplate_filter: bool = True
    """Remove paragraphs repeated across many documents and inside one document."""
    boilerplate_min_doc_share: float = 0.1
    """A paragraph found in at least this share of documents is boilerplate."""
    boilerplate_min_docs: int = 1000
    """... or in at least this many documents (large corpora, where a share is too high a bar; 0: off)."""
    exact_dedup: bool = True
    """Drop exact duplicate documents."""
    minhash_dedup: bool = True
    """MinHash-LSH near-duplicate removal."""
    minhash_threshold: float = 0.8
    """Jaccard similarity at which documents count as duplicates."""
    minhash_ngrams: int = 5
    """Words per shingle (characters for scripts written without spaces)."""
    minhash_buckets: int | None = None
    """LSH bands (None: chosen from minhash_threshold, see docs/corpus-prepare.md)."""
    minhash_rows: int | None = None
    """Hashes per band (None: chosen from minhash_threshold)."""
    slurm_partition: str = ""
    """Slurm partition (executor slurm)."""
    slurm_time: str = "24:00:00"
    """Slurm time limit per task (executor slurm)."""
    cpus_per_task: int = 1
    """CPUs per task (executors slurm and ray)."""
    mem_per_cpu_gb: float = 2.0
    """Memory per CPU in GB (executors slurm and ray)."""
    output_format: str = "jsonl.gz"
    """Shard format: jsonl.gz or parquet."""
    licenses: list[str] = field(default_factory=list)
    """Licences of the sources, copied into the data card."""

    def __post_init__(self) -> None:
        check_choice("executor", self.executor, ("local", "slurm", "ray"))
        if not 0 < self.minhash_threshold < 1:
            raise ConfigError("minhash_threshold must be between 0 and 1")
        check_choice("output_format", self.output_format, ("jsonl.gz", "parquet"))
        if self.tasks < 1 or self.workers == 0 or self.workers < -1:
            raise ConfigError("tasks must be >= 1 and workers >= 1 (or -1: one per core)")
        if not 0 <= self.min_script_ratio <= 1 or not 0 < self.boilerplate_min_doc_share <= 1:
            raise ConfigError("min_script_ratio must be in [0, 1] and boilerplate_min_doc_share in (0, 1]")
        if (self.minhash_buckets is None) != (self.minhash_rows is None):
            raise ConfigError("set both minhash_buckets and minhash_rows, or neither")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("executor slurm needs slurm_partition")


@dataclass(kw_only=True)
class ExtendConfig:
    base: str = path()
    """Base model alias or folder whose tokenizer is extended (recipe: the recipe's base_model)."""
    corpus: list[str] = paths()
    """Target-language training text."""
    english_corpus: list[str] = paths()
    """English text whose base tokenization must not change (merges seen there are skipped)."""
    english_heldout: list[str] = paths()
    """Held-out English text: reported, how many of its documents tokenize differently."""
    target_heldout: list[str] = paths()
    """Held-out target-language text: its tokens per word before and after are reported."""
    num_new_tokens: int = 8000
    """How many target-language tokens to add after the base vocabulary."""
    min_frequency: int = 2
    """A new merge must occur at least this many times in the corpus."""
    text_field: str = "text"
    """Field or column that holds the text in jsonl / parquet / datasets input."""
    max_docs: int | None = None
    """Read at most this many target documents (None: all)."""

    def __post_init__(self) -> None:
        if self.num_new_tokens <= 0:
            raise ConfigError("num_new_tokens must be > 0")
        if self.min_frequency < 1:
            raise ConfigError("min_frequency must be >= 1")


@dataclass(kw_only=True)
class SweepConfig:
    base: str = path()
    """Base model alias or folder whose tokenizer is extended (recipe: the recipe's base_model)."""
    corpus: list[str] = paths()
    """Target-language text; every 10th document is held out to measure fertility on."""
    english_corpus: list[str] = paths()
    """English text whose base tokenization must not change (as in tokenizer extend)."""
    sizes: list[int] = field(default_factory=lambda: [500, 1000, 2000, 4000, 8000, 16000])
    """Numbers of new tokens to measure."""
    min_frequency: int = 2
    """A new merge must occur at least this many times in the corpus."""
    threshold: float = 0.10
    """Suggest the first size after which a doubling lowers tokens per word by less than this share."""
    text_field: str = "text"
    """Field or column that holds the text in jsonl / parquet / datasets input."""

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) <= 0:
            raise ConfigError("sizes must be positive numbers of new tokens")
        if not 0 < self.threshold < 1:
            raise ConfigError("threshold must be between 0 and 1")


@dataclass(kw_only=True)
class InitConfig:
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
    text_field: str = "text"
    """Field or column that holds the text."""
    bf16: bool | None = None
    """bf16 autocast for the probes (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        check_choice("method", self.method, ("mean-subword", "mean", "random"))
        check_choice("output_remedy", self.output_remedy, ("auto", "shift", "none"))
        check_device(self.device)
        if self.output_shift < 0:
            raise ConfigError("output_shift must be >= 0")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of <= 0:
            raise ConfigError("pad_to_multiple_of must be > 0")


@dataclass(kw_only=True)
class DistillConfig:
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
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    checkpoint_every: int = 50
    """Steps between resumable checkpoints."""
    report_to: str = "auto"
    """accelerate trackers: auto (every one installed of tensorboard and wandb), none, or a comma-separated list."""
    text_field: str = "text"
    """Field or column that holds the text."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError("steps must be > 0")
        if self.calibrate_steps < 0:
            raise ConfigError("calibrate_steps must be >= 0")
        if self.lr <= 0 or (self.calibrate_lr is not None and self.calibrate_lr <= 0):
            raise ConfigError("lr and calibrate_lr must be > 0")
        if self.batch_size <= 0 or self.seq_len <= 1 or self.checkpoint_every <= 0:
            raise ConfigError("batch_size and checkpoint_every must be > 0, seq_len > 1")
        parse_report_to(self.report_to)
        check_device(self.device)


@dataclass(kw_only=True)
class PackConfig:
    tokenizer: str = path()
    """Tokenizer folder or model alias."""
    target: list[str] = paths()
    """Target-language text."""
    english: list[str] = paths()
    """English text."""
    ratio: float = 0.75
    """Share of target-language tokens (SambaLingo 0.75, DictaLM 0.5)."""
    seq_len: int = 2048
    """Tokens per packed row."""
    tokens: int = 1_000_000
    """Token budget of the packed dataset."""
    max_epochs: float = 4.0
    """How many passes over a source the mix may use before running out is an error (>= 1)."""
    seed: int = 0
    """Seed for document order."""
    workers: int = 2
    """Tokenizer worker processes (<= 1: tokenize in the main process)."""
    shuffle_buffer: int = 4096
    """Documents held in the bounded shuffle buffer of each source (memory does not grow with input)."""
    text_field: str = "text"
    """Field or column that holds the text."""

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ConfigError(f"ratio must be between 0 and 1 (exclusive), not {self.ratio}")
        if self.seq_len <= 1 or self.tokens <= 0:
            raise ConfigError("seq_len must be > 1 and tokens > 0")
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1 (one full pass), not {self.max_epochs}")
        if self.shuffle_buffer < 1:
            raise ConfigError("shuffle_buffer must be >= 1")


@dataclass(kw_only=True)
class DataTranslateConfig:
    input: list[str] = paths()
    """Chat or preference jsonl[.gz] files (globs allowed) to translate."""
    kind: str = "auto"
    """chat ({"messages": [{"role", "content"}, ...]}), preference ({"prompt", "chosen", "rejected"}, plain
    text or message lists) or auto (decided by each file's first item)."""
    translator: str = path()
    """Local model folder that translates: a causal LM or a seq2seq MT model (Marian, NLLB, M2M100, MADLAD)."""
    translator_kind: str = "auto"
    """causal, seq2seq or auto (seq2seq when config.json says is_encoder_decoder)."""
    back_translator: str = path()
    """Model folder for the round trip, tgt to src (empty: the translator; a one-pair Marian model needs its
    reverse model here)."""
    backend: str = "auto"
    """transformers, vllm (causal translators; pip install 'langadapt[vllm]', a CUDA GPU) or auto (vllm when
    it is installed and CUDA is present, else transformers)."""
    src: str = "en"
    """Language code of the input."""
    tgt: str = ""
    """Language code to translate into (recipe: the recipe's target_lang)."""
    pairs: str = path()
    """Parallel jsonl[.gz] with a src and a tgt field: the few-shot examples of a causal translator (its
    train / dev split where the file has a split field)."""
    prompt: str = "few-shot"
    """Causal translators: few-shot (eval translate's "{src} = {tgt}" prompt, shots from pairs) or chat (the
    translator's chat template with chat_instruction)."""
    shots: int = 4
    """Few-shot examples per prompt (the same seeded ones for every text of a direction)."""
    chat_instruction: str = ("Translate the following text from {src} to {tgt}. Keep every marker such as "
                             "⟦1⟧ unchanged. Reply with the translation only.\n\n{text}")
    """The user turn of the chat prompt ({src}, {tgt}: language codes; {text}: the text)."""
    src_tag: str = ""
    """A multilingual seq2seq model's code for src: NLLB eng_Latn, M2M100 en, MADLAD <2en> (empty: none)."""
    tgt_tag: str = ""
    """Its code for tgt: NLLB hun_Latn, M2M100 hu, MADLAD <2hu> (empty: a one-pair model such as Marian)."""
    batch_size: int = 8
    """Items per batch (flushed to the work folder together); texts generated at once."""
    max_new_tokens_factor: float = 2.0
    """Generated tokens at most: ceil(factor x the source text's tokens in the translator's tokenizer) + extra."""
    max_new_tokens_extra: int = 8
    """Added to the generation cap (see max_new_tokens_factor)."""
    min_script_ratio: float = 0.6
    """Share of a translation's letters that must be in tgt's script(s) (corpus prepare's measure)."""
    language_id: bool = True
    """Drop items whose translations py3langid does not identify as tgt (texts of langid_min_letters or more)."""
    langid_min_letters: int = 20
    """Translations with fewer letters are not language-identified (too short to tell)."""
    min_length_ratio: float = 0.4
    """Lowest translation / source length in characters (protected spans left out; sources of 20+ only)."""
    max_length_ratio: float = 2.5
    """Highest translation / source length in characters."""
    round_trip: bool = True
    """Translate every kept translation back and drop items below min_round_trip_chrf."""
    min_round_trip_chrf: float = 30.0
    """Lowest sentence chrF (sacrebleu) of a back-translation against its source, 0-100."""
    max_items: int | None = None
    """Items translated, the first ones of the input (None: all)."""
    seed: int = 0
    """Seed for the few-shot examples."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("auto", "chat", "preference"))
        check_choice("translator_kind", self.translator_kind, ("auto", "causal", "seq2seq"))
        check_choice("backend", self.backend, ("auto", "transformers", "vllm"))
        check_choice("prompt", self.prompt, ("few-shot", "chat"))
        if self.src == self.tgt:
            raise ConfigError(f"src and tgt must be two different languages, not both {self.src!r}")
        if not 0 <= self.min_script_ratio <= 1:
            raise ConfigError(f"min_script_ratio must be in [0, 1], not {self.min_script_ratio}")
        if not 0 <= self.min_length_ratio <= self.max_length_ratio:
            raise ConfigError("min_length_ratio must be >= 0 and at most max_length_ratio")
        if not 0 <= self.min_round_trip_chrf <= 100:
            raise ConfigError(f"min_round_trip_chrf must be in [0, 100], not {self.min_round_trip_chrf}")
        if self.shots < 0 or self.langid_min_letters < 0:
            raise ConfigError("shots and langid_min_letters must be >= 0")
        if self.batch_size <= 0 or (self.max_items is not None and self.max_items <= 0):
            raise ConfigError("batch_size must be > 0 and max_items > 0 (or None: all)")
        if self.max_new_tokens_factor <= 0 or self.max_new_tokens_extra < 0:
            raise ConfigError("max_new_tokens_factor must be > 0 and max_new_tokens_extra >= 0")
        check_device(self.device)


@dataclass(kw_only=True)
class PretrainConfig:
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
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
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
    text_field: str = "text"
    """Field or column that holds the text of the evaluation corpora."""
    seed: int = 0
    """Seed for initialisation of anything random and for data order."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.micro_batch <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch and grad_accum must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("max_steps must be > 0")
        check_choice("attention", self.attention, ("auto", "sdpa", "flex", "flash"))
        check_choice("select_metric", self.select_metric, ("target_bpb", "english_bpb"))
        check_device(self.device)
        parse_report_to(self.report_to)
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ConfigError("keep_checkpoints must be >= 1; checkpoint_every and eval_every >= 0")


TRACKERS = ("tensorboard", "wandb")
"""accelerate trackers ``report_to`` may name."""


def parse_report_to(spec: str) -> list[str]:
    """``"auto"`` / ``"none"`` alone, or a comma-separated list of :data:`TRACKERS` (the one parser)."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if names in (["auto"], ["none"]):
        return names
    bad = next((n for n in names if n not in TRACKERS), None) if names else ""
    if bad is not None:
        raise ConfigError(f"report_to: unknown tracker {bad!r} (auto, none, or a list of {', '.join(TRACKERS)})")
    return names


@dataclass(kw_only=True)
class AlignConfig:
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
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (trl turns it on by default; here it is off unless asked)."""
    report_to: str = "none"
    """Trainer loggers: none, auto (every one installed of tensorboard and wandb), or a comma-separated list."""
    text_field: str = "text"
    """Field or column that holds the text of the evaluation corpora."""
    seed: int = 0
    """Seed for initialisation, the mix and the data order."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda or mps."""

    def __post_init__(self) -> None:
        if not 0 <= self.ratio <= 1:
            raise ConfigError(f"ratio must be between 0 and 1 (the share of translated examples), not {self.ratio}")
        check_choice("mix_strategy", self.mix_strategy,
                     ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement"))  # fmt: skip
        check_choice("attention", self.attention, ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"))
        if self.lr <= 0 or self.epochs <= 0 or self.max_length <= 1:
            raise ConfigError("lr and epochs must be > 0 and max_length > 1")
        if self.micro_batch <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch and grad_accum must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("max_steps must be > 0 (or None: epochs)")
        if self.max_examples is not None and self.max_examples <= 0:
            raise ConfigError("max_examples must be > 0 (or None: all)")
        if self.warmup < 0 or self.eval_max_docs <= 0 or self.checkpoint_every < 0:
            raise ConfigError("warmup must be >= 0, eval_max_docs > 0 and checkpoint_every >= 0")
        if self.lora and self.train != "full":
            raise ConfigError("train applies without LoRA only (with lora, the adapters and the new token rows train)")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_r and lora_alpha must be > 0 and lora_dropout in [0, 1)")
        parse_report_to(self.report_to)
        check_device(self.device)


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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0 or self.eval_pairs <= 0:
            raise ConfigError("beta and eval_pairs must be > 0")


@dataclass(kw_only=True)
class EvalConfig:
    models: list[str] = paths()
    """Models to compare (the runner adds base and adapted models)."""
    target: list[str] = paths()
    """Held-out target-language text."""
    english: list[str] = paths()
    """Held-out English text."""
    max_docs: int | None = 64
    """Documents per corpus (None: all)."""
    max_doc_chars: int | None = None
    """Each document cut to its first max_doc_chars characters, at a word boundary: the same text for every
    model; more, shorter documents cover more of a corpus for the same compute (None: whole documents)."""
    batch_size: int = 8
    """Windows per forward pass."""
    max_len: int = 1024
    """Window length in tokens; longer documents are scored in strided windows."""
    stride: int = 512
    """New tokens scored per window after the first; the rest of the window is left context."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    text_field: str = "text"
    """Field or column that holds the text."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.max_docs is not None and self.max_docs <= 0:
            raise ConfigError("max_docs must be > 0 (or None: all)")
        if self.max_doc_chars is not None and self.max_doc_chars <= 0:
            raise ConfigError("max_doc_chars must be > 0 (or None: whole documents)")
        if self.batch_size <= 0 or not 0 < self.stride < self.max_len:
            raise ConfigError("batch_size must be > 0 and stride between 1 and max_len - 1")
        check_device(self.device)


@dataclass(kw_only=True)
class ChoiceConfig:
    models: list[str] = paths()
    """Models to compare, each scored with its own tokenizer on the same items."""
    task: str = path()
    """Multiple-choice task: jsonl of {"question", "choices", "answer"} (optional "context"), e.g. from eval make-choice."""
    max_items: int | None = None
    """Items scored, the first ones of the file (None: all)."""
    batch_size: int = 16
    """Sequences (one per item and choice) per forward pass."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items <= 0:
            raise ConfigError("max_items must be > 0 (or None: all)")
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be > 0")
        check_device(self.device)


@dataclass(kw_only=True)
class MakeChoiceConfig:
    pairs: str = path()
    """Parallel jsonl[.gz]: one object a line with a field per language code (and optionally "split")."""
    src: str = "en"
    """Field (language code) of the sentence the question shows."""
    tgt: str = ""
    """Field (language code) of the translations the choices are (recipe: the recipe's target_lang)."""
    n_choices: int = 4
    """Choices per item: the true translation and n_choices - 1 distractors."""
    max_items: int | None = None
    """Items made, a seeded sample of the pairs (None: one per pair); every kept pair is a distractor source."""
    split: str | None = "valid"
    """Keep only pairs whose "split" field equals this (pairs without the field are kept; None or '': all)."""
    seed: int = 0
    """Seed for the sample, the distractors and the answer positions."""

    def __post_init__(self) -> None:
        if self.n_choices < 2:
            raise ConfigError("n_choices must be >= 2")
        if self.max_items is not None and self.max_items <= 0:
            raise ConfigError("max_items must be > 0 (or None: all)")
        if self.src == self.tgt:
            raise ConfigError(f"src and tgt must be two different fields, not both {self.src!r}")


@dataclass(kw_only=True)
class TranslateConfig:
    models: list[str] = paths()
    """Models to compare, each generating with its own tokenizer on the same items."""
    pairs: str = path()
    """Parallel jsonl[.gz]: one object a line with a field per language code (and optionally "split")."""
    src: str = "en"
    """Field (language code) of the source side."""
    tgt: str = ""
    """Field (language code) of the target side (recipe: the recipe's target_lang)."""
    directions: list[str] = field(default_factory=lambda: ["src-tgt"])
    """Directions translated: src-tgt, tgt-src, or both."""
    shots: int = 8
    """Few-shot examples before each test sentence (the same seeded ones for every item of a direction)."""
    max_items: int | None = 100
    """Test items, a seeded sample of the test pairs (None: all)."""
    split: str | None = "valid"
    """Test items are the pairs whose "split" equals this, shots come from "train" / "dev" pairs; a file
    without a split field: shots come from the pairs not sampled as test items."""
    seed: int = 0
    """Seed for the test sample, the shots and the bootstrap resamples."""
    batch_size: int = 8
    """Prompts generated at once (left-padded, KV cache)."""
    max_new_tokens_factor: float = 1.5
    """Generated tokens at most: ceil(factor x the reference's tokens in the model's own tokenizer) + extra."""
    max_new_tokens_extra: int = 8
    """Added to the generation cap (see max_new_tokens_factor)."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if not self.directions or len(set(self.directions)) != len(self.directions):
            raise ConfigError("directions must be one or both of src-tgt and tgt-src, each once")
        for direction in self.directions:
            check_choice("directions", direction, ("src-tgt", "tgt-src"))
        if self.shots < 0:
            raise ConfigError("shots must be >= 0")
        if self.max_items is not None and self.max_items <= 0:
            raise ConfigError("max_items must be > 0 (or None: all)")
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be > 0")
        if self.max_new_tokens_factor <= 0 or self.max_new_tokens_extra < 0:
            raise ConfigError("max_new_tokens_factor must be > 0 and max_new_tokens_extra >= 0")
        if self.src == self.tgt:
            raise ConfigError(f"src and tgt must be two different fields, not both {self.src!r}")
        check_device(self.device)


@dataclass(kw_only=True)
class ReportConfig:
    run_dir: str = path()
    """Run folder to report on (recipe: the run's own folder); the report goes to its report/."""
    translation_samples: int = 3
    """Translation items shown per direction, every model's output beside the source and reference."""
    max_sample_chars: int = 600
    """Longest prompt, output or reference shown in a samples section (longer ones are cut, marked …)."""
    significance: float = 0.05
    """A difference from the base (first) model is called significant when its p-value is below this."""

    def __post_init__(self) -> None:
        if self.translation_samples < 0 or self.max_sample_chars <= 0:
            raise ConfigError("translation_samples must be >= 0 and max_sample_chars > 0")
        if not 0 < self.significance < 1:
            raise ConfigError("significance must be between 0 and 1")


@dataclass(kw_only=True)
class SamplesConfig:
    models: list[str] = paths()
    """Models to compare, each continuing the same fixed prompts."""
    prompts: str = path()
    """Prompts jsonl, one {"lang", "prompt"} object a line (empty: openings of the held-out text below)."""
    target: list[str] = paths()
    """Held-out target-language text the prompts are taken from when no prompts file is given."""
    english: list[str] = paths()
    """Held-out English text the prompts are taken from when no prompts file is given."""
    tgt: str = ""
    """Language code recorded for the target-language prompts (recipe: the recipe's target_lang)."""
    per_language: int = 3
    """Prompts taken from each held-out corpus: the openings of its first documents."""
    min_chars: int = 60
    """A prompt comes from the first paragraph of a document with at least this many characters."""
    prompt_chars: int = 80
    """Prompts are that paragraph's first characters, cut back to a word boundary."""
    max_new_tokens: int = 40
    """Tokens generated at most (greedy; an output also ends at its first newline)."""
    batch_size: int = 8
    """Prompts generated at once (left-padded, KV cache)."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    text_field: str = "text"
    """Field or column that holds the text."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.per_language <= 0 or self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ConfigError("per_language, max_new_tokens and batch_size must be > 0")
        if not 0 < self.min_chars <= self.prompt_chars:
            raise ConfigError("min_chars must be > 0 and at most prompt_chars")
        check_device(self.device)


@dataclass(kw_only=True)
class MakeChatConfig:
    pairs: str = path()
    """Parallel jsonl[.gz] (a field per language code, optionally "split"): the translation tasks."""
    target: list[str] = paths()
    """Target-language documents (training text): the native heading-to-paragraph tasks."""
    english: list[str] = paths()
    """English documents (training text): the English heading tasks, also the part to translate."""
    target_heldout: list[str] = paths()
    """Held-out target-language documents: the headings of eval chat's fixed prompts."""
    src: str = "en"
    """Field (language code) of the English side of the pairs."""
    tgt: str = ""
    """Field (language code) of the target side (recipe: the recipe's target_lang)."""
    tgt_name: str = ""
    """The target language's name in the English prompts, e.g. Hungarian (empty: the code)."""
    translate_prompt: str = "Translate into {lang}: {text}"
    """User turn of a translation task ({lang}: the language to translate into, {text}: the sentence)."""
    heading_prompt: str = "Write the paragraph that follows this heading: {heading}"
    """User turn of a heading task ({heading}) for English documents."""
    heading_prompt_tgt: str = ""
    """The same for target-language documents, in the target language (empty: heading_prompt)."""
    translation_items: int = 64
    """Training pairs made into tasks (each gives one task per direction)."""
    heading_items: int = 64
    """Heading tasks per language."""
    heldout_items: int = 24
    """Held-out preference pairs, chat translation pairs and target-language prompts for eval chat."""
    heldout_split: str = "valid"
    """Pairs whose "split" is this are held out; the others are training material."""
    seed: int = 0
    """Seed for the sample, the wrong answers and the order."""
    text_field: str = "text"
    """Field or column that holds the text."""

    def __post_init__(self) -> None:
        if min(self.translation_items, self.heading_items, self.heldout_items) <= 0:
            raise ConfigError("translation_items, heading_items and heldout_items must be > 0")
        if self.src == self.tgt:
            raise ConfigError(f"src and tgt must be two different fields, not both {self.src!r}")


@dataclass(kw_only=True)
class EvalChatConfig:
    models: list[str] = paths()
    """Models to compare, each through its own chat template (the first is the baseline)."""
    preferences: str = path()
    """Held-out preference jsonl (prompt / chosen / rejected, plain or conversational)."""
    pairs: str = path()
    """Held-out parallel jsonl for chat translation, src -> tgt."""
    prompts: str = path()
    """Fixed target-language user turns, jsonl of {"prompt"} (answers: language share and repetition)."""
    english: list[str] = paths()
    """Held-out English text for bits per byte."""
    src: str = "en"
    """Field (language code) of the source side of the pairs."""
    tgt: str = ""
    """Target language code: the pairs' target field and the language the answers should be in."""
    tgt_name: str = ""
    """The target language's name in translate_prompt, e.g. Hungarian (empty: the code)."""
    translate_prompt: str = "Translate into {lang}: {text}"
    """User turn of a chat translation ({lang}, {text})."""
    max_new_tokens: int = 64
    """Tokens generated at most for an answer to a fixed prompt."""
    max_new_tokens_factor: float = 1.5
    """Chat translation cap: ceil(factor x the reference's tokens in the model's tokenizer) + extra."""
    max_new_tokens_extra: int = 8
    """Added to the chat translation cap."""
    max_docs: int | None = 16
    """Held-out English documents for bits per byte (None: all)."""
    max_doc_chars: int | None = 2500
    """Each English document cut to its first max_doc_chars characters (None: whole documents)."""
    samples: int = 4
    """Outputs per kind and model kept in samples.jsonl for the report."""
    batch_size: int = 8
    """Sequences per forward pass / prompts generated at once."""
    seed: int = 0
    """Seed for the bootstrap resamples."""
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    text_field: str = "text"
    """Field or column that holds the English text."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0 or self.batch_size <= 0 or self.samples < 0:
            raise ConfigError("max_new_tokens and batch_size must be > 0, samples >= 0")
        if self.max_new_tokens_factor <= 0 or self.max_new_tokens_extra < 0:
            raise ConfigError("max_new_tokens_factor must be > 0 and max_new_tokens_extra >= 0")
        check_device(self.device)


# -------------------------------------------------------------------------------------------- recipe


@dataclass(kw_only=True)
class DataConfig:
    target_train: list[str] = paths()
    """Target-language training text."""
    target_valid: list[str] = paths()
    """Held-out target-language text (evaluation only)."""
    english_train: list[str] = paths()
    """English training text (mixing, and the reference whose tokenization must not change)."""
    english_valid: list[str] = paths()
    """Held-out English text (evaluation only)."""
    parallel: str = path()
    """English–target pairs, jsonl[.gz] with an "en" and a target_lang field (evaluation tasks are built
    from its valid split)."""
    text_field: str = "text"
    """Field or column that holds the text in every corpus; it is every stage's text_field."""


@dataclass(kw_only=True)
class Recipe:
    name: str
    """Run name: outputs go to runs_dir/name/."""
    base_model: str = path("smollm2-135m")
    """Base model alias or folder."""
    target_lang: str = "hu"
    """ISO 639-1 code of the target language."""
    runs_dir: str = "runs"
    """Folder that holds run folders (relative paths: to the current directory)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the text comes from."""
    prepare: PrepareConfig | None = None
    """Corpus cleaning and deduplication (omit to skip)."""
    sweep: SweepConfig | None = None
    """Fertility against the number of new tokens, to choose extend's num_new_tokens (omit to skip)."""
    extend: ExtendConfig | None = None
    """Tokenizer extension (omit to skip)."""
    init: InitConfig | None = None
    """New-row initialisation (omit to skip)."""
    distill: DistillConfig | None = None
    """DictaLM embedding distillation + LM-head calibration (omit to skip)."""
    pack: PackConfig | None = None
    """Mixing and packing (omit to skip)."""
    data_translate: DataTranslateConfig | None = None
    """Machine translation of chat / preference data with a local model (omit to skip)."""
    pretrain: PretrainConfig | None = None
    """Continual pretraining (omit to skip)."""
    sft: SftConfig | None = None
    """Supervised fine-tuning on chat data, English and translated mixed (trl; omit to skip)."""
    dpo: DpoConfig | None = None
    """Direct preference optimisation from the SFT model (trl; omit to skip)."""
    eval: EvalConfig | None = None
    """Final evaluation (omit to skip)."""
    make_choice: MakeChoiceConfig | None = None
    """A pick-the-translation multiple-choice task from data.parallel, English to target_lang (omit to skip)."""
    choice: ChoiceConfig | None = None
    """Multiple-choice accuracy of every model of the run, on make_choice's task by default (omit to skip)."""
    translate: TranslateConfig | None = None
    """Few-shot translation (chrF++, BLEU) of every model of the run, on data.parallel (omit to skip)."""
    samples: SamplesConfig | None = None
    """Continuations of fixed prompts by every model of the run, for a human to read (omit to skip)."""
    make_chat: MakeChatConfig | None = None
    """Demonstration chat and preference data from data.parallel and the corpora, for sft / dpo / chat
    (omit to skip)."""
    chat: EvalChatConfig | None = None
    """Chat-template evaluation of the model before alignment and after sft / dpo (omit to skip)."""
    report: ReportConfig | None = None
    """report.md and plots/ from the run's records, rebuilt on every run; runs whenever an eval stage does
    (omit: defaults)."""


# ------------------------------------------------------------------------------------- YAML mapping


def from_dict(cls: type, data: Any, *, source: str, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are ConfigErrors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'} must be a mapping", source)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key {dotted!r} (valid: {', '.join(fields)})", source)
        kwargs[key] = _coerce(hints[key], value, source=source, where=dotted)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'recipe'}: {exc}", source) from exc
    except ConfigError as exc:
        raise ConfigError(f"{where or 'recipe'}: {exc}", source) from exc


def _coerce(hint: Any, value: Any, *, source: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, source=source, where=where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source=source, where=where)
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list", source)
        return [_coerce(args[0], v, source=source, where=where) for v in value]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values", source)
        return tuple(_coerce(a, v, source=source, where=where) for a, v in zip(args, value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where} must be {hint.__name__}, not {value!r}", source)
    return value


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """A recipe file's YAML mapping, as written (``extends`` included)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise UserError("recipe not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping", path)
    data = dict(data or {})
    data.pop("langadapt_version", None)  # written into resolved recipes; harmless on reload
    return data


def load_recipe(path: str | Path, data: dict[str, Any] | None = None) -> Recipe:
    """The recipe of ``path`` (or of its already-read ``data``)."""
    data = read_recipe_data(path) if data is None else data
    if "name" not in data:
        raise ConfigError("recipe needs a 'name'", path)
    return from_dict(Recipe, data, source=str(path))


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    from langadapt import __version__
    from langadapt.runs import to_jsonable

    return yaml.safe_dump(
        {"langadapt_version": __version__, **to_jsonable(recipe)}, sort_keys=False, allow_unicode=True
    )


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass (read from the source, as litgpt does)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a subclass's doc wins
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        docs.update({
            node.target.id: " ".join(nxt.value.value.split())
            for node, nxt in itertools.pairwise(body)
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
        })  # fmt: skip
    return docs
