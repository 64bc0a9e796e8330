"""What every config shares: the path markers, the checks, the field-docstring reader, and the small bases
that declare a field used by many stages once, with its docstring and its validation.

A stage config derives from :class:`Config` (through the bases it needs) and checks its own fields in a
``validate`` method: :meth:`Config.__post_init__` runs the ``validate`` of every class of the hierarchy
once, bases first, so a base's check cannot be skipped by a subclass that forgets ``super()``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import re
import textwrap
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------------------------- checks


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """``name must be a, b or c, not 'x'`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}" if len(choices) > 1 else str(choices[0])
        raise ConfigError(f"{name} must be {listed}, not {value!r}")


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (the runtime resolves it; checked here, before any work)."""
    if device not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")


def check_max(name: str, value: int | None, none: str = "all") -> None:
    """An optional count: ``None`` (meaning ``none``) or > 0."""
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be > 0 (or None: {none})")


def check_two_sides(src: str, tgt: str, what: str = "fields") -> None:
    """The two sides of a language pair differ."""
    if src == tgt:
        raise ConfigError(f"src and tgt must be two different {what}, not both {src!r}")


def check_generation_cap(factor: float, extra: int) -> None:
    """``ceil(factor x reference tokens) + extra`` caps a generation: factor > 0, extra >= 0."""
    if factor <= 0 or extra < 0:
        raise ConfigError("max_new_tokens_factor must be > 0 and max_new_tokens_extra >= 0")


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


# ---------------------------------------------------------------------------------------------- bases


@dataclass(kw_only=True)
class Config:
    """Root of the stage configs: runs each class's own ``validate`` once, bases first."""

    def __post_init__(self) -> None:
        for klass in reversed(type(self).__mro__):
            check = klass.__dict__.get("validate")
            if check is not None:
                check(self)


@dataclass(kw_only=True)
class ModelList(Config):
    """A stage that compares several models on the same inputs."""

    models: list[str] = paths()
    """Models to compare on the same inputs, each with its own tokenizer (eval chat: its own chat template);
    the first is the baseline (recipe: filled in with the run's base and adapted models)."""


@dataclass(kw_only=True)
class TextField(Config):
    """A stage that reads text from jsonl / parquet / datasets input."""

    text_field: str = "text"
    """Field or column that holds the text in jsonl / parquet / datasets input (of the stage's text corpora;
    chat, preference and packed data have formats of their own)."""


@dataclass(kw_only=True)
class Runtime(Config):
    """A stage that runs a model: where, and in which precision."""

    bf16: bool | None = None
    """bf16 autocast (None: where it is faster, i.e. GPUs and CPUs with native bf16)."""
    device: str = "auto"
    """Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps."""

    def validate(self) -> None:
        check_device(self.device)


SHARED_ORDER = {ModelList: -1, TextField: 1, Runtime: 2}
"""Where the fields of a shared base go among a stage's options (0: the stage's own fields): the models
compared lead, as the stage's main input; the text field and the runtime settings follow."""


def declared_in(cls: type, name: str) -> type:
    """The class of ``cls``'s hierarchy that declares field ``name`` (the nearest one, for a redeclared field)."""
    return next(k for k in cls.__mro__ if name in inspect.get_annotations(k))


def option_fields(cls: type) -> list[dataclasses.Field]:
    """``cls``'s fields in the order a reader wants them (CLI help, recipe reference): the stage's own
    fields in declaration order (a stage family's base, such as AlignConfig, counts as its own), with the
    shared bases' fields placed by :data:`SHARED_ORDER` (dataclass inheritance would put them all first)."""
    return sorted(dataclasses.fields(cls), key=lambda f: SHARED_ORDER.get(declared_in(cls, f.name), 0))


# ----------------------------------------------------------------------------------------- docstrings


@functools.cache
def _own_field_docs(klass: type) -> dict[str, str]:
    """The docstrings under the fields ``klass`` itself declares (read from the source, as litgpt does)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
    return {
        node.target.id: " ".join(nxt.value.value.split())
        for node, nxt in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }  # fmt: skip


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass, following the class hierarchy: a field gets
    the docstring of the class that declares it (a subclass that redeclares a field, its own)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a subclass's doc wins
        docs.update(_own_field_docs(klass))
    return docs
