"""Every shipped recipe loads against the dataclasses and dry-runs without its model or data."""

from __future__ import annotations

from pathlib import Path

import pytest

from langadapt.cli import main
from langadapt.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "src" / "langadapt" / "recipes").glob("*.yaml"))


def test_the_papers_recipes_are_shipped():
    assert {"sambalingo.yaml", "dictalm.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_dry_runs(path, tmp_path, capsys):
    recipe = load_recipe(path)
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
