"""Configs of the tokenizer stages (``tokenizer extend``, ``tokenizer sweep``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from langadapt.config.base import ConfigError, TextField, path, paths


@dataclass(kw_only=True)
class ExtendConfig(TextField):
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
    max_docs: int | None = None
    """Read at most this many target documents (None: all)."""
    workers: int = 1
    """Processes that count the corpus's words (the base pre-tokenizer's units); same result for any number."""

    def validate(self) -> None:
        if self.num_new_tokens <= 0:
            raise ConfigError("num_new_tokens must be > 0")
        if self.min_frequency < 1:
            raise ConfigError("min_frequency must be >= 1")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, not {self.workers}")


@dataclass(kw_only=True)
class SweepConfig(TextField):
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

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) <= 0:
            raise ConfigError("sizes must be positive numbers of new tokens")
        if not 0 < self.threshold < 1:
            raise ConfigError("threshold must be between 0 and 1")
