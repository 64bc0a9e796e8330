"""One dataclass per stage; a recipe YAML maps onto them 1:1.

Each field carries a docstring (the recipe reference in docs/recipes.md is generated from them). Input
paths of a stage are optional in a recipe: the runner fills them from the recipe's ``data`` section and
from the folders of earlier stages. An unknown or misspelled key is an error naming the key and the file,
so a run never trains on silently ignored settings.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.errors import UserError


class ConfigError(UserError):
    """A recipe or flag value that does not make sense."""


# --------------------------------------------------------------------------------------------- stages


@dataclass(kw_only=True)
class PrepareConfig:
    input: list[str] = field(default_factory=list)
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
        if self.executor not in ("local", "slurm", "ray"):
            raise ConfigError(f"executor must be local, slurm or ray, not {self.executor!r}")
        if not 0 < self.minhash_threshold < 1:
            raise ConfigError("minhash_threshold must be between 0 and 1")
        if self.output_format not in ("jsonl.gz", "parquet"):
            raise ConfigError(f"output_format must be jsonl.gz or parquet, not {self.output_format!r}")
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
    base: str = ""
    """Base model alias or folder whose tokenizer is extended (recipe: the recipe's base_model)."""
    corpus: list[str] = field(default_factory=list)
    """Target-language training text."""
    english_corpus: list[str] = field(default_factory=list)
    """English text whose base tokenization must not change (merges seen there are skipped)."""
    english_heldout: list[str] = field(default_factory=list)
    """Held-out English text: reported, how many of its documents tokenize differently."""
    target_heldout: list[str] = field(default_factory=list)
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
class InitConfig:
    model: str = ""
    """Base model alias or folder (recipe: the recipe's base_model)."""
    tokenizer: str = ""
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
    kl_corpus: list[str] = field(default_factory=list)
    """English text on which KL(base || extended) of next-token distributions is measured."""
    kl_max_docs: int = 16
    """Documents used for the KL measurement."""

    def __post_init__(self) -> None:
        if self.method not in ("mean-subword", "mean", "random"):
            raise ConfigError(f"method must be mean-subword, mean or random, not {self.method!r}")
        if self.output_remedy not in ("auto", "shift", "none"):
            raise ConfigError(f"output_remedy must be auto, shift or none, not {self.output_remedy!r}")
        if self.output_shift < 0:
            raise ConfigError("output_shift must be >= 0")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of <= 0:
            raise ConfigError("pad_to_multiple_of must be > 0")


@dataclass(kw_only=True)
class DistillConfig:
    model: str = ""
    """Initialised extended model folder (from embeddings init)."""
    teacher: str = ""
    """The original model, reading the original tokenization (recipe: the recipe's base_model)."""
    corpus: list[str] = field(default_factory=list)
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
    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. CPUs with bf16 support and GPUs)."""
    checkpoint_every: int = 50
    """Steps between resumable checkpoints."""
    text_field: str = "text"
    """Field or column that holds the text."""

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError("steps must be > 0")
        if self.calibrate_steps < 0:
            raise ConfigError("calibrate_steps must be >= 0")
        if self.lr <= 0 or (self.calibrate_lr is not None and self.calibrate_lr <= 0):
            raise ConfigError("lr and calibrate_lr must be > 0")
        if self.batch_size <= 0 or self.seq_len <= 1 or self.checkpoint_every <= 0:
            raise ConfigError("batch_size and checkpoint_every must be > 0, seq_len > 1")


@dataclass(kw_only=True)
class PackConfig:
    tokenizer: str = ""
    """Tokenizer folder or model alias."""
    target: list[str] = field(default_factory=list)
    """Target-language text."""
    english: list[str] = field(default_factory=list)
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
class PretrainConfig:
    model: str = ""
    """Model folder to continue training (from embeddings init / distill)."""
    data: str = ""
    """Packed dataset folder (from data pack)."""
    eval_target: list[str] = field(default_factory=list)
    """Held-out target-language text for bits-per-byte evaluation."""
    eval_english: list[str] = field(default_factory=list)
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
    """bf16 autocast (None: where supported and faster)."""
    compile: bool = False
    """torch.compile the model."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    attention: str = "auto"
    """Document-masked attention kernel: auto, sdpa, flex or flash."""
    eval_every: int = 0
    """Steps between bits-per-byte evaluations (0: only at the end)."""
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

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.micro_batch <= 0 or self.grad_accum <= 0:
            raise ConfigError("micro_batch and grad_accum must be > 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("max_steps must be > 0")
        if self.attention not in ("auto", "sdpa", "flex", "flash"):
            raise ConfigError(f"attention must be auto, sdpa, flex or flash, not {self.attention!r}")
        if self.select_metric not in ("target_bpb", "english_bpb"):
            raise ConfigError(f"select_metric must be target_bpb or english_bpb, not {self.select_metric!r}")
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
class EvalConfig:
    models: list[str] = field(default_factory=list)
    """Models to compare (the runner adds base and adapted models)."""
    target: list[str] = field(default_factory=list)
    """Held-out target-language text."""
    english: list[str] = field(default_factory=list)
    """Held-out English text."""
    max_docs: int | None = 64
    """Documents per corpus (None: all)."""
    batch_size: int = 8
    """Windows per forward pass."""
    max_len: int = 1024
    """Window length in tokens; longer documents are scored in strided windows."""
    stride: int = 512
    """New tokens scored per window after the first; the rest of the window is left context."""


# -------------------------------------------------------------------------------------------- recipe


@dataclass(kw_only=True)
class DataConfig:
    target_train: list[str] = field(default_factory=list)
    """Target-language training text."""
    target_valid: list[str] = field(default_factory=list)
    """Held-out target-language text (evaluation only)."""
    english_train: list[str] = field(default_factory=list)
    """English training text (mixing, and the reference whose tokenization must not change)."""
    english_valid: list[str] = field(default_factory=list)
    """Held-out English text (evaluation only)."""
    text_field: str = "text"
    """Field or column that holds the text."""


@dataclass(kw_only=True)
class Recipe:
    name: str
    """Run name: outputs go to runs_dir/name/."""
    base_model: str = "smollm2-135m"
    """Base model alias or folder."""
    target_lang: str = "hu"
    """ISO 639-1 code of the target language."""
    runs_dir: str = "runs"
    """Folder that holds run folders (relative paths: to the current directory)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the text comes from."""
    prepare: PrepareConfig | None = None
    """Corpus cleaning and deduplication (omit to skip)."""
    extend: ExtendConfig | None = None
    """Tokenizer extension (omit to skip)."""
    init: InitConfig | None = None
    """New-row initialisation (omit to skip)."""
    distill: DistillConfig | None = None
    """DictaLM embedding distillation + LM-head calibration (omit to skip)."""
    pack: PackConfig | None = None
    """Mixing and packing (omit to skip)."""
    pretrain: PretrainConfig | None = None
    """Continual pretraining (omit to skip)."""
    eval: EvalConfig | None = None
    """Final evaluation (omit to skip)."""


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


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.exists():
        raise UserError("recipe not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from exc
    data = dict(data or {})
    data.pop("langadapt_version", None)  # written into resolved recipes; harmless on reload
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

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        node.target.id: " ".join(nxt.value.value.split())
        for node, nxt in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }


def recipe_reference() -> str:
    """Markdown reference of every recipe key (docs/recipes.md is this text; a test keeps it in sync)."""
    intro = "Generated from `langadapt/config.py` by `python -m langadapt.config > docs/recipes.md`."
    lines = ["# Recipe reference", "", f"{intro} Unknown keys are errors.", ""]
    sections = [("top level", Recipe)] + [
        (f.name, next(a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)))
        for f in dataclasses.fields(Recipe)
        for hint in [typing.get_type_hints(Recipe)[f.name]]
        if any(dataclasses.is_dataclass(a) for a in (hint, *typing.get_args(hint)))
    ]
    section_names = {name for name, _ in sections}
    for section, cls in sections:
        docs = field_docs(cls)
        lines += [f"## `{section}` ({cls.__name__})", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if cls is Recipe and f.name in section_names:
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "required"
            lines.append(f"| `{f.name}` | `{default}` | {docs.get(f.name, '')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(recipe_reference(), end="")
