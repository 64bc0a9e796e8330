"""The recipe: its top level, its ``data`` section and one optional section per stage, read from YAML.

A recipe YAML maps onto these dataclasses 1:1; an unknown or misspelled key is an error naming the key
and the file, so a run never trains on silently ignored settings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.config.base import ConfigError, option_fields, path, paths
from langadapt.config.corpus import PrepareConfig
from langadapt.config.data import DataTranslateConfig, MakeChatConfig, PackConfig
from langadapt.config.embeddings import DistillConfig, InitConfig
from langadapt.config.eval import (
    ChoiceConfig,
    EvalChatConfig,
    EvalConfig,
    MakeChoiceConfig,
    ReportConfig,
    SamplesConfig,
    SpeedConfig,
    TranslateConfig,
)
from langadapt.config.export import ExportConfig
from langadapt.config.tokenizer import ExtendConfig, SweepConfig
from langadapt.config.train import DpoConfig, PretrainConfig, SftConfig
from langadapt.errors import UserError


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
    speed: SpeedConfig | None = None
    """Words per second generated, base against the run's final model, in transformers and llama.cpp (omit to skip)."""
    make_chat: MakeChatConfig | None = None
    """Demonstration chat and preference data from data.parallel and the corpora, for sft / dpo / chat
    (omit to skip)."""
    chat: EvalChatConfig | None = None
    """Chat-template evaluation of the model before alignment and after sft / dpo (omit to skip)."""
    export: ExportConfig | None = None
    """GGUF export of the run's final model (the last aligned one if any) by llama.cpp's converter, checked in
    a real llama.cpp runtime when one is installed (omit to skip)."""
    report: ReportConfig | None = None
    """report.md and plots/ from the run's records, rebuilt on every run; runs whenever an eval stage does
    (omit: defaults)."""


def from_dict(cls: type, data: Any, *, source: str, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are ConfigErrors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'} must be a mapping", source)
    fields = {f.name: f for f in option_fields(cls)}  # listed in the reference's order
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
