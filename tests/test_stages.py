"""The stage declarations are the one source of the CLI, the recipe sections and the docs; the stage runner
owns skip / refuse / resume / commit for every stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tiny

from langadapt import config as C
from langadapt.cli import app, main
from langadapt.errors import UserError
from langadapt.runs import STAGE_JSON, STARTED_JSON, is_done, run_stage, work_folder
from langadapt.stages import BY_NAME, STAGES, Stage, recipe_reference

IDS = [s.name for s in STAGES]


def click_command(stage: Stage):
    import typer

    group, _, name = stage.command.rpartition(" ")
    root = typer.main.get_command(app)
    return root.commands[group].commands[name] if group else root.commands[name]


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_every_config_field_is_an_option_with_the_same_default(stage):
    params = {p.name: p for p in click_command(stage).params}
    for f in dataclasses.fields(stage.config):
        assert f.name in params, f"{stage.command}: no --{f.name.replace('_', '-')}"
        if f.name == stage.run_arg:  # the positional RUN_DIR
            assert params[f.name].required and params[f.name].param_type_name == "argument"
            continue
        got, want = params[f.name].default, default_of(f)
        if isinstance(want, (list, tuple)):
            got, want = list(got or []), list(want)
        assert got == want, f"{stage.command} --{f.name}: default {got!r}, config {want!r}"
        assert params[f.name].help.startswith(C.field_docs(stage.config)[f.name][:30])
    if stage.run_arg:
        assert "out" not in params
    else:
        assert params["out"].required


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_recipe_section_round_trips(stage, tmp_path):
    cfg = stage.config()
    recipe = C.Recipe(name="x", **{stage.name: cfg})
    path = tmp_path / "r.yaml"
    path.write_text(C.dump_recipe(recipe))
    again = C.load_recipe(path)
    assert getattr(again, stage.name) == cfg


@pytest.mark.parametrize("stage", STAGES, ids=IDS)
def test_unknown_recipe_key_is_one_line_exit_2(stage, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: x\n{stage.name}:\n  no_such_key: 1\n")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"unknown key '{stage.name}.no_such_key'" in err and str(path) in err


def test_every_stage_has_its_own_folder_and_an_importable_entry():
    assert len({s.folder for s in STAGES}) == len(STAGES) == len({s.command for s in STAGES})
    for stage in STAGES:
        assert callable(stage.function())
        assert stage.name in {f.name for f in dataclasses.fields(C.Recipe)}


def test_docs_reference_is_in_sync():
    docs = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    assert docs.read_text() == recipe_reference(), "run: python -m langadapt.stages > docs/recipes.md"


# ------------------------------------------------------------------------------- the stage runner


@dataclasses.dataclass(kw_only=True)
class CountConfig:
    n: int = 3
    """How many lines to write."""
    fail_at: int = -1
    """Raise a crash after writing this many lines (-1: never)."""
    bad_input: bool = False
    """Raise a UserError before writing anything."""


def count_entry(cfg: CountConfig, work: Path) -> dict:
    """A resumable toy stage: one line per step, continuing from what an unfinished run wrote."""
    if cfg.bad_input:
        raise UserError("bad input", "input.txt")
    log = work / "lines.txt"
    done = log.read_text().count("\n") if log.exists() else 0
    for i in range(done, cfg.n):
        if i == cfg.fail_at:
            raise RuntimeError("crash")
        with open(log, "a") as fh:
            fh.write(f"{i}\n")
    return {"lines": cfg.n, "resumed_from": done}


COUNT = Stage("count", "test count", "count", CountConfig, "test_stages:count_entry", "toy", resumable=True,
              runtime_only=("fail_at",))  # fmt: skip


def test_runner_commits_skips_identical_and_refuses_another_config(tmp_path):
    out = tmp_path / "c"
    record = run_stage(COUNT, CountConfig(), out)
    assert is_done(out) and not work_folder(out).exists()
    assert json.loads((out / STAGE_JSON).read_text())["config"] == {"n": 3, "fail_at": -1, "bad_input": False}
    assert record["lines"] == 3 and "langadapt_version" in record and "seconds" in record
    stamp = (out / "DONE").stat().st_mtime_ns
    assert run_stage(COUNT, CountConfig(), out)["skipped"]
    assert (out / "DONE").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match=r"another config \(changed: n\)"):
        run_stage(COUNT, CountConfig(n=4), out)


def test_runner_resumes_an_unfinished_run_of_the_same_config(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(RuntimeError):
        run_stage(COUNT, CountConfig(n=5, fail_at=2), out)
    assert not out.exists() and (work_folder(out) / STARTED_JSON).exists()
    with pytest.raises(UserError, match=r"unfinished count run of another config \(changed: n\)"):
        run_stage(COUNT, CountConfig(n=6), out)
    record = run_stage(COUNT, CountConfig(n=5), out)  # fail_at is runtime-only: same run
    assert record["resumed_from"] == 2
    assert (out / "lines.txt").read_text() == "0\n1\n2\n3\n4\n"
    assert not (out / STARTED_JSON).exists()


def test_runner_leaves_nothing_behind_on_bad_input(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(UserError, match="input.txt: bad input"):
        run_stage(COUNT, CountConfig(bad_input=True), out)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_that_is_not_a_stage_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(UserError, match="not a finished langadapt stage"):
        run_stage(COUNT, CountConfig(), tmp_path / "c")


# -------------------------------------------------------------- CLI and recipe: the same stage.json


def test_cli_and_recipe_record_the_same_config_and_numbers(tmp_path, tiny_tied, hu_texts, en_texts):
    hu = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts[200:206], field="content")
    en = tiny.write_jsonl(tmp_path / "en.jsonl", en_texts[200:206], field="content")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nbase_model: {tiny_tied}\nruns_dir: {tmp_path / 'runs'}\n"
                      f"data:\n  target_valid: {hu}\n  english_valid: {en}\n  text_field: content\n"
                      "eval:\n  max_len: 64\n  stride: 32\n")  # fmt: skip
    main(["run", str(recipe)])
    main(["eval", "bpb", "--models", str(tiny_tied), "--target", str(hu), "--english", str(en),
          "--text-field", "content", "--max-len", "64", "--stride", "32", "--out", str(tmp_path / "cli")])  # fmt: skip
    from_recipe = json.loads((tmp_path / "runs" / "r" / "eval" / STAGE_JSON).read_text())
    from_cli = json.loads((tmp_path / "cli" / STAGE_JSON).read_text())
    assert from_recipe["config"] == from_cli["config"]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "runs" / "r" / "eval", tmp_path / "cli")]
    assert metrics[0]["models"] == metrics[1]["models"]
    assert metrics[0]["docs"] == {"target": 6, "english": 6}


def test_a_stage_text_field_that_contradicts_the_data_section_is_refused(tmp_path):
    from langadapt.pipeline import plan

    recipe = C.Recipe(name="x", data=C.DataConfig(text_field="content"), eval=C.EvalConfig(text_field="body"))
    with pytest.raises(C.ConfigError, match="set it once, in the data section"):
        plan(recipe)
    assert BY_NAME["eval"].folder == "eval"
