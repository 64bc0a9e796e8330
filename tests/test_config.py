"""Recipes map 1:1 onto the stage dataclasses; unknown keys and bad values are errors naming the file."""

from __future__ import annotations

import dataclasses

import pytest

from langadapt import config as C
from langadapt.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_recipe_round_trips_through_yaml(tmp_path):
    path = write(tmp_path, "name: x\nextend:\n  num_new_tokens: 5\n  corpus: a.txt\npretrain:\n  betas: [0.9, 0.99]\n  lr: 1\n")
    recipe = C.load_recipe(path)
    assert recipe.extend.num_new_tokens == 5 and recipe.extend.corpus == ["a.txt"]
    assert recipe.pretrain.betas == (0.9, 0.99) and recipe.pretrain.lr == 1.0
    assert recipe.init is None
    again = C.load_recipe(write(tmp_path, C.dump_recipe(recipe)))
    assert again == recipe


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nextend:\n  num_new_tokns: 5\n", "unknown key 'extend.num_new_tokns'"),
        ("name: x\nbogus: 1\n", "unknown key 'bogus'"),
        ("name: x\nextend:\n  num_new_tokens: 0\n", "num_new_tokens must be > 0"),
        ("name: x\nextend:\n  num_new_tokens: many\n", "must be int"),
        ("name: x\npack:\n  ratio: 1.5\n", "ratio must be between 0 and 1"),
        ("extend: {}\n", "needs a 'name'"),
        ("name: x\n  bad: [indent\n", "not valid YAML"),
    ],
)
def test_bad_recipes_are_errors_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as err:
        C.load_recipe(path)
    assert str(path) in str(err.value)


def every_config_class():
    yield C.Recipe
    for f in dataclasses.fields(C.Recipe):
        hint = C.typing.get_type_hints(C.Recipe)[f.name]
        for arg in (hint, *C.typing.get_args(hint)):
            if dataclasses.is_dataclass(arg):
                yield arg


@pytest.mark.parametrize("cls", sorted(set(every_config_class()), key=lambda c: c.__name__))
def test_every_field_has_a_docstring(cls):
    documented = C.field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented]
    assert not missing, f"{cls.__name__}: fields without a docstring: {missing}"


@pytest.mark.parametrize("spec", ["auto,tensorboard", "none,wandb", "", "comet"])
def test_report_to_is_parsed_once_and_strictly(spec):
    """One parser for config and trackers: what the config accepts, training can resolve."""
    with pytest.raises(C.ConfigError, match="report_to"):
        C.PretrainConfig(report_to=spec)
    assert C.parse_report_to(" tensorboard , wandb ") == ["tensorboard", "wandb"]
