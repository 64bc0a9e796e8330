"""The recipe runner: the stages in order, each reading only the folders of earlier stages.

A stage whose folder holds ``DONE`` is skipped, so rerunning a recipe after a crash redoes only what is
unfinished (and ``train pretrain`` resumes from its last checkpoint). Paths a recipe leaves empty are
filled here from the recipe's ``data`` section and the earlier stages' folders; this wiring is the only
thing the runner knows about stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt import config as C
from langadapt.runs import Timer, is_done, write_text_atomic

STAGE_DIRS = {
    "prepare": "corpus",
    "extend": "tokenizer",
    "init": "model",
    "distill": "distill",
    "pack": "packed",
    "pretrain": "pretrain",
    "eval": "eval",
}


@dataclass
class PlannedStage:
    name: str
    out: Path
    config: Any
    done: bool


def resolve_paths(recipe: C.Recipe, base_dir: Path) -> C.Recipe:
    """Make every relative input path in the recipe relative to the recipe file's folder (in place)."""

    def fix(obj: Any) -> Any:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                fix(value)
            elif f.name in _PATH_FIELDS and isinstance(value, list):
                setattr(obj, f.name, [_resolve(base_dir, v) for v in value])
            elif f.name in _PATH_FIELDS and isinstance(value, str) and value:
                setattr(obj, f.name, _resolve(base_dir, value))
        return obj

    fix(recipe)
    recipe.base_model = _resolve(base_dir, recipe.base_model)
    return recipe


_PATH_FIELDS = {
    "input", "corpus", "english_corpus", "english_heldout", "target_heldout", "kl_corpus", "target", "english",
    "eval_target", "eval_english", "target_train", "target_valid", "english_train", "english_valid",
}  # fmt: skip


def _is_alias(name: str) -> bool:
    from langadapt.models import ALIASES

    return name in ALIASES


def _resolve(base_dir: Path, value: str) -> str:
    if _is_alias(value) or Path(value).is_absolute():
        return value
    return str(base_dir / value)  # globs stay globs; corpus prepare expands them


def plan(recipe: C.Recipe) -> list[PlannedStage]:
    """The stages the recipe asks for, with every input path filled in."""
    run_dir = Path(recipe.runs_dir) / recipe.name
    d = recipe.data
    target_train = list(d.target_train)
    stages: list[PlannedStage] = []
    dirs = {name: run_dir / sub for name, sub in STAGE_DIRS.items()}

    def add(name: str, cfg: Any, **defaults: Any) -> None:
        for key, value in defaults.items():
            if not getattr(cfg, key):
                setattr(cfg, key, value)
        stages.append(PlannedStage(name, dirs[name], cfg, is_done(dirs[name])))

    if recipe.prepare:
        add("prepare", recipe.prepare, input=target_train, lang=recipe.target_lang,
            text_field=d.text_field)  # fmt: skip
        from langadapt.corpus.prepare import output_files

        target_train = output_files(dirs["prepare"])
    if recipe.extend:
        add("extend", recipe.extend, base=recipe.base_model, corpus=target_train,
            english_corpus=d.english_train, english_heldout=d.english_valid,
            target_heldout=d.target_valid)  # fmt: skip
    tokenizer = str(dirs["extend"]) if recipe.extend else recipe.base_model
    models = [recipe.base_model]  # every model the run makes, in order; the last one trains next
    if recipe.init:
        add("init", recipe.init, model=recipe.base_model, tokenizer=tokenizer, kl_corpus=d.english_valid)
        models.append(str(dirs["init"]))
    if recipe.distill:
        add("distill", recipe.distill, model=models[-1], teacher=recipe.base_model, corpus=target_train)
        models.append(str(dirs["distill"]))
    if recipe.pack:
        add("pack", recipe.pack, tokenizer=tokenizer, target=target_train, english=d.english_train)
    if recipe.pretrain:
        add("pretrain", recipe.pretrain, model=models[-1], data=str(dirs["pack"]),
            eval_target=d.target_valid, eval_english=d.english_valid)  # fmt: skip
        models.append(str(dirs["pretrain"] / "final"))
    if recipe.eval:
        add("eval", recipe.eval, models=models, target=d.target_valid, english=d.english_valid)
    return stages


def stage_function(name: str) -> Callable[[Any, Path], Any]:
    """The entry function of a stage (imported lazily: heavy libraries load only when needed)."""
    if name == "prepare":
        from langadapt.corpus.prepare import prepare as fn
    elif name == "extend":
        from langadapt.tokenizer.extend import extend as fn
    elif name == "init":
        from langadapt.embeddings.init import init_embeddings as fn
    elif name == "distill":
        from langadapt.embeddings.distill import distill as fn
    elif name == "pack":
        from langadapt.data.pack import pack as fn
    elif name == "pretrain":
        from langadapt.train.pretrain import pretrain as fn
    elif name == "eval":
        from langadapt.eval.report import evaluate_run as fn
    else:  # pragma: no cover - plan() only yields the names above
        raise KeyError(name)
    return fn


def run_recipe(recipe: C.Recipe, *, dry_run: bool = False, log: Callable[[str], None] = print) -> Path:
    """Run every unfinished stage of ``recipe``; return the run folder."""
    run_dir = Path(recipe.runs_dir) / recipe.name
    stages = plan(recipe)
    for stage in stages:
        state = "done, skipped" if stage.done else ("would run" if dry_run else "running")
        log(f"[{stage.name}] {state} -> {stage.out}")
    if dry_run:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", C.dump_recipe(recipe))
    for stage in stages:
        if stage.done:  # plan() looked; a stage writes only its own folder
            continue
        log(f"[{stage.name}] started")
        with Timer() as timer:
            stage_function(stage.name)(stage.config, stage.out)
        log(f"[{stage.name}] done in {timer.seconds:.1f} s")
    return run_dir
