"""Every shipped recipe loads against the dataclasses and dry-runs without its model or data."""

from __future__ import annotations

from pathlib import Path

import pytest

from langadapt.cli import main
from langadapt.config import load_recipe
from langadapt.errors import UserError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "src" / "langadapt" / "recipes").glob("*.yaml"))


def test_the_papers_recipes_are_shipped():
    assert {"sambalingo.yaml", "dictalm.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_dry_runs(path, tmp_path, capsys):
    from langadapt.pipeline import load_recipe_file

    recipe = load_recipe_file(path)  # extends (the chat demo's) included
    assert recipe.name
    runs = tmp_path / "runs"
    main(["run", str(path), "--dry-run", "--runs-dir", str(runs)])
    lines = capsys.readouterr().out.splitlines()
    assert lines and all("would run" in line for line in lines)
    assert not runs.exists()  # a dry run writes nothing


def test_papers_settings():
    samba = load_recipe(RECIPES[0].with_name("sambalingo.yaml"))
    assert samba.extend.num_new_tokens == 25000 and samba.init.method == "mean-subword"
    assert (samba.pack.ratio, samba.pack.seq_len) == (0.75, 4096)
    p = samba.pretrain
    assert p.micro_batch * p.grad_accum * 8 == 1024  # 8 GPUs: 1024 rows x 4096 tokens a step
    assert (p.lr, p.warmup, p.weight_decay) == (1e-4, 0.01, 0.1)
    dicta = load_recipe(RECIPES[0].with_name("dictalm.yaml"))
    assert dicta.target_lang == "he" and dicta.extend.num_new_tokens == 1000
    assert dicta.distill is not None and dicta.pack.ratio == 0.5


def test_a_recipe_extends_another_with_paths_relative_to_each_file(tmp_path):
    from langadapt.pipeline import load_recipe_file

    (tmp_path / "base").mkdir()
    (tmp_path / "chat").mkdir()
    (tmp_path / "base" / "parent.yaml").write_text(
        "name: demo\ndata:\n  target_valid: [hu.jsonl]\n  parallel: pairs.jsonl\neval:\n  max_docs: 3\n"
        "extend:\n  num_new_tokens: 10\n"
    )
    (tmp_path / "chat" / "child.yaml").write_text(
        "extends: ../base/parent.yaml\ndata:\n  english_valid: [en.jsonl]\neval:\n  max_docs: 5\n"
    )
    recipe = load_recipe_file(tmp_path / "chat" / "child.yaml")
    assert recipe.name == "demo" and recipe.extend.num_new_tokens == 10  # kept from the parent
    assert recipe.eval.max_docs == 5  # a section of the child replaces the parent's
    assert recipe.data.target_valid == [str(tmp_path / "base" / "hu.jsonl")]  # merged, each file's folder
    assert recipe.data.english_valid == [str(tmp_path / "chat" / "en.jsonl")]
    (tmp_path / "base" / "parent.yaml").write_text("extends: ../chat/child.yaml\nname: loop\n")
    with pytest.raises(UserError, match="cycle"):
        load_recipe_file(tmp_path / "chat" / "child.yaml")


def test_the_chat_demo_extends_the_demo_and_wires_its_chat_stages(tmp_path):
    from langadapt.pipeline import load_recipe_file, plan

    chat = load_recipe_file(RECIPES[0].with_name("demo-hu-chat.yaml"))
    base = load_recipe_file(RECIPES[0].with_name("demo-hu.yaml"))
    chat.runs_dir = base.runs_dir = str(tmp_path)
    chat_stages = {s.name: s for s in plan(chat)}
    base_stages = {s.name: s for s in plan(base)}
    # every stage of the base demo is planned with the same config: a finished base run is skipped
    for name, stage in base_stages.items():
        if name != "report":
            assert chat_stages[name].config == stage.config and chat_stages[name].out == stage.out, name
    run = tmp_path / "demo-hu"
    final, sft, dpo = str(run / "pretrain" / "final"), str(run / "sft" / "final"), str(run / "dpo" / "final")
    assert chat_stages["data_translate"].config.translator == final
    assert chat_stages["sft"].config.model == final
    assert chat_stages["sft"].config.data == [str(run / "chat-data" / "sft-english.jsonl")]
    assert chat_stages["sft"].config.translated == [str(run / "chat-data" / "sft-target.jsonl"),
                                                   str(run / "translated" / "translated" / "to-translate.jsonl")]
    assert chat_stages["dpo"].config.model == sft
    assert chat_stages["chat"].config.models == ["smollm2-135m", final, sft, dpo]  # first_is_base: the base first
    assert list(chat_stages)[-1] == "report"
