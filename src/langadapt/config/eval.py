"""Configs of the evaluation stages (``eval ...``, ``report``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from langadapt.config.base import (
    Config,
    ConfigError,
    ModelList,
    Runtime,
    TextField,
    check_choice,
    check_generation_cap,
    check_max,
    check_two_sides,
    path,
    paths,
)
from langadapt.models import DTYPES


@dataclass(kw_only=True)
class EvalConfig(ModelList, TextField, Runtime):
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
    dtype: str = "float32"
    """dtype each model is loaded in: float32 (the figures do not depend on how a model is stored; a bf16
    model is converted, twice its bytes in memory), auto (the one it is stored in: a bf16 model stays in
    its mapped file, for models that do not fit twice), bfloat16 or float16."""

    def validate(self) -> None:
        check_choice("dtype", self.dtype, DTYPES)
        check_max("max_docs", self.max_docs)
        check_max("max_doc_chars", self.max_doc_chars, "whole documents")
        if self.batch_size <= 0 or not 0 < self.stride < self.max_len:
            raise ConfigError("batch_size must be > 0 and stride between 1 and max_len - 1")


@dataclass(kw_only=True)
class MakeChoiceConfig(Config):
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

    def validate(self) -> None:
        if self.n_choices < 2:
            raise ConfigError("n_choices must be >= 2")
        check_max("max_items", self.max_items)
        check_two_sides(self.src, self.tgt)


@dataclass(kw_only=True)
class ChoiceConfig(ModelList, Runtime):
    task: str = path()
    """Multiple-choice task: jsonl of {"question", "choices", "answer"} (optional "context"), e.g. from eval make-choice."""
    max_items: int | None = None
    """Items scored, the first ones of the file (None: all)."""
    batch_size: int = 16
    """Sequences (one per item and choice) per forward pass."""

    def validate(self) -> None:
        check_max("max_items", self.max_items)
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be > 0")


@dataclass(kw_only=True)
class TranslateConfig(ModelList, Runtime):
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

    def validate(self) -> None:
        if not self.directions or len(set(self.directions)) != len(self.directions):
            raise ConfigError("directions must be one or both of src-tgt and tgt-src, each once")
        for direction in self.directions:
            check_choice("directions", direction, ("src-tgt", "tgt-src"))
        if self.shots < 0:
            raise ConfigError("shots must be >= 0")
        check_max("max_items", self.max_items)
        if self.batch_size <= 0:
            raise ConfigError("batch_size must be > 0")
        check_generation_cap(self.max_new_tokens_factor, self.max_new_tokens_extra)
        check_two_sides(self.src, self.tgt)


@dataclass(kw_only=True)
class SamplesConfig(ModelList, TextField, Runtime):
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

    def validate(self) -> None:
        if self.per_language <= 0 or self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ConfigError("per_language, max_new_tokens and batch_size must be > 0")
        if not 0 < self.min_chars <= self.prompt_chars:
            raise ConfigError("min_chars must be > 0 and at most prompt_chars")


SPEED_RUNTIMES = ("transformers", "llamacpp")
"""Where ``eval speed`` times generation."""


@dataclass(kw_only=True)
class SpeedConfig(ModelList, TextField, Runtime):
    target: list[str] = paths()
    """Held-out target-language text: prompts are the first words of its documents, tokens/word its own."""
    english: list[str] = paths()
    """Held-out English text: prompts are the first words of its documents, tokens/word its own."""
    tgt: str = ""
    """Language code recorded for the target-language prompts (recipe: the recipe's target_lang)."""
    per_language: int = 4
    """Prompts per held-out corpus: the openings of its first documents that are long enough."""
    prompt_words: int = 12
    """A prompt is the first prompt_words whitespace words of a document."""
    words: int = 48
    """Words generated after every prompt, the same for every model and runtime (greedy, EOS banned)."""
    max_tokens_per_word: float = 12.0
    """Generation cap: words x this many tokens; a prompt a model does not complete within it is left out."""
    repeats: int = 1
    """Timed generations of each prompt; the fastest counts (the one other processes disturbed least)."""
    clock: str = "wall"
    """wall: elapsed seconds, what a user waits; cpu: this process's CPU seconds, steadier on a busy machine."""
    runtimes: list[str] = field(default_factory=lambda: list(SPEED_RUNTIMES))
    """Runtimes timed: transformers and/or llamacpp (llamacpp is skipped, reason recorded, without a runtime)."""
    gguf: list[str] = paths()
    """llama.cpp: one GGUF per model, in the models' order (empty: each converted to a temporary f16 GGUF)."""
    llama_cpp: str = path()
    """llama.cpp's converter, to make those GGUFs: as export gguf's llama_cpp (empty: looked for as it does)."""
    llama_lib: str = path()
    """llama.cpp shared library (libllama) or its folder (empty: looked for as langadapt.llamacpp does)."""
    threads: int | None = None
    """CPU threads of both runtimes, the same for every model (None: every core this process may use)."""
    heldout_docs: int | None = 200
    """Held-out documents whose tokens per word are reported beside the speed (None: all)."""

    def validate(self) -> None:
        if min(self.per_language, self.prompt_words, self.words, self.repeats) <= 0:
            raise ConfigError("per_language, prompt_words, words and repeats must be > 0")
        if self.max_tokens_per_word < 1:
            raise ConfigError("max_tokens_per_word must be >= 1")
        if not self.runtimes or len(set(self.runtimes)) != len(self.runtimes):
            raise ConfigError("runtimes must be one or both of transformers and llamacpp, each once")
        for runtime in self.runtimes:
            check_choice("runtimes", runtime, SPEED_RUNTIMES)
        check_choice("clock", self.clock, ("wall", "cpu"))
        if self.gguf and self.models and len(self.gguf) != len(self.models):  # a recipe fills models later
            raise ConfigError(f"gguf needs one file per model ({len(self.models)}), not {len(self.gguf)}")
        check_max("threads", self.threads, "every core")
        check_max("heldout_docs", self.heldout_docs)


@dataclass(kw_only=True)
class EvalChatConfig(ModelList, TextField, Runtime):
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
    first_is_base: bool = False
    """The first of models is the base model the run started from (labelled base; p-values compare with
    it; it needs a chat template). A recipe's runner then puts its base model before the model it aligned."""

    def validate(self) -> None:
        if self.max_new_tokens <= 0 or self.batch_size <= 0 or self.samples < 0:
            raise ConfigError("max_new_tokens and batch_size must be > 0, samples >= 0")
        check_generation_cap(self.max_new_tokens_factor, self.max_new_tokens_extra)


@dataclass(kw_only=True)
class ReportConfig(Config):
    run_dir: str = path()
    """Run folder to report on (recipe: the run's own folder); the report goes to its report/."""
    translation_samples: int = 3
    """Translation items shown per direction, every model's output beside the source and reference."""
    max_sample_chars: int = 600
    """Longest prompt, output or reference shown in a samples section (longer ones are cut, marked …)."""
    significance: float = 0.05
    """A difference from the base (first) model is called significant when its p-value is below this."""

    def validate(self) -> None:
        if self.translation_samples < 0 or self.max_sample_chars <= 0:
            raise ConfigError("translation_samples must be >= 0 and max_sample_chars > 0")
        if not 0 < self.significance < 1:
            raise ConfigError("significance must be between 0 and 1")
