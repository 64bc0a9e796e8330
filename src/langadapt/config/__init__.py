"""One dataclass per stage; a recipe YAML maps onto them 1:1.

Each field carries a docstring (the recipe reference in docs/recipes.md is generated from them). Input
paths of a stage are optional in a recipe: the runner fills them from the recipe's ``data`` section and
from the folders of earlier stages. An unknown or misspelled key is an error naming the key and the file,
so a run never trains on silently ignored settings.

One module per stage family (:mod:`.corpus`, :mod:`.tokenizer`, :mod:`.embeddings`, :mod:`.data`,
:mod:`.train`, :mod:`.eval`), the recipe in :mod:`.recipe`, and in :mod:`.base` what they share: the path
markers, the checks, the field-docstring reader and the small bases declaring the runtime settings
(``device``, ``bf16``), the text field and the model list once. Everything is importable from here.
"""

from __future__ import annotations

# the standard names the single-module config exported, kept for callers that reach them through it
import dataclasses as dataclasses
import itertools as itertools
import re as re
import types as types
import typing as typing
from dataclasses import dataclass as dataclass
from dataclasses import field as field
from pathlib import Path as Path
from typing import Any as Any

from langadapt.config.base import (
    PATH,
    TRACKERS,
    Config,
    ConfigError,
    ModelList,
    Runtime,
    TextField,
    check_choice,
    check_device,
    check_generation_cap,
    check_max,
    check_two_sides,
    declared_in,
    field_docs,
    is_path_field,
    option_fields,
    parse_report_to,
    path,
    paths,
)
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
from langadapt.config.recipe import (
    DataConfig,
    Recipe,
    _coerce,
    dump_recipe,
    from_dict,
    load_recipe,
    read_recipe_data,
)
from langadapt.config.tokenizer import ExtendConfig, SweepConfig
from langadapt.config.train import AlignConfig, DpoConfig, PretrainConfig, SftConfig
from langadapt.errors import UserError

__all__ = [
    "PATH", "TRACKERS", "AlignConfig", "ChoiceConfig", "Config", "ConfigError", "DataConfig",
    "DataTranslateConfig", "DistillConfig", "DpoConfig", "EvalChatConfig", "EvalConfig", "ExportConfig", "ExtendConfig",
    "InitConfig", "MakeChatConfig", "MakeChoiceConfig", "ModelList", "PackConfig", "PrepareConfig",
    "PretrainConfig", "Recipe", "ReportConfig", "Runtime", "SamplesConfig", "SftConfig", "SpeedConfig", "SweepConfig",
    "TextField", "TranslateConfig", "UserError", "_coerce", "check_choice", "check_device",
    "check_generation_cap", "check_max", "check_two_sides", "declared_in", "dump_recipe", "field_docs",
    "from_dict", "is_path_field", "load_recipe", "option_fields", "parse_report_to", "path", "paths",
    "read_recipe_data",
]  # fmt: skip
