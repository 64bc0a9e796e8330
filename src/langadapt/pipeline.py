"""The recipe runner: the stages in order, each reading only the folders of earlier stages.

Every stage goes through the stage runner (:func:`langadapt.runs.run_stage`), exactly as from the CLI: a
finished stage of the same config is skipped, so rerunning a recipe after a crash redoes only what is
unfinished (and ``train pretrain`` / ``embeddings distill`` resume from their last checkpoint). Paths a recipe leaves empty are
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
from langadapt.data.chat_data import FILES
from langadapt.eval.common import TASK_JSONL
from langadapt.models import ALIASES
from langadapt.runs import check_finished, config_defaults, is_done, run_stage, to_jsonable, write_text_atomic
from langadapt.stages import BY_NAME, STAGES, Stage

EVAL_STAGES = ("eval", "choice", "translate", "samples", "speed", "chat")
"""A recipe with any of these sections gets the report (the ``report`` stage, last) too."""


@dataclass
class PlannedStage:
    stage: Stage
    out: Path
    config: Any
    done: bool

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def skipped(self) -> bool:
        """Finished, so the runner returns it as it is (a rebuilt stage, the report, never is)."""
        return self.done and not self.stage.rebuild


def load_recipe_file(path: Path, _seen: tuple[Path, ...] = ()) -> C.Recipe:
    """A recipe whose relative paths are relative to the recipe file's folder.

    ``extends: OTHER.yaml`` starts from another recipe (its paths relative to *its* folder) and replaces
    its sections with this file's; ``data`` is merged key by key. The chat demo extends the base demo
    this way, so the two runs share their stages and a finished base run is skipped.
    """
    path = Path(path).resolve()
    data = C.read_recipe_data(path)
    parent = data.pop("extends", None)
    if parent is not None:
        parent_path = (path.parent / str(parent)).resolve()
        if parent_path in (*_seen, path):
            raise C.ConfigError(f"'extends' makes a cycle through {parent_path.name}", path)
        merged = to_jsonable(load_recipe_file(parent_path, (*_seen, path)))
        for key, value in data.items():
            if key == "data" and isinstance(value, dict):
                merged["data"] = {**merged["data"], **value}
            else:
                merged[key] = value
        data = merged
    return resolve_paths(C.load_recipe(path, data), path.parent)


def resolve_paths(recipe: C.Recipe, base_dir: Path) -> C.Recipe:
    """Make every relative path field of the recipe (marked ``config.PATH``) relative to ``base_dir``, in place."""

    def fix(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                fix(value)
            elif C.is_path_field(f) and isinstance(value, list):
                setattr(obj, f.name, [_resolve(base_dir, v) for v in value])
            elif C.is_path_field(f) and isinstance(value, str) and value:
                setattr(obj, f.name, _resolve(base_dir, value))

    fix(recipe)
    return recipe


def _resolve(base_dir: Path, value: str) -> str:
    if value in ALIASES or Path(value).is_absolute():
        return value
    return str(base_dir / value)  # globs stay globs; corpus prepare expands them


def _apply_data_settings(name: str, cfg: Any, data: C.DataConfig) -> None:
    """Recipe-wide settings reach every stage: ``data.text_field`` is every stage's ``text_field``."""
    if not hasattr(cfg, "text_field"):
        return
    if cfg.text_field not in ("text", data.text_field):
        raise C.ConfigError(f"{name}.text_field {cfg.text_field!r} differs from data.text_field "
                            f"{data.text_field!r}: set it once, in the data section")  # fmt: skip
    cfg.text_field = data.text_field


def plan(recipe: C.Recipe) -> list[PlannedStage]:
    """The stages the recipe asks for, in order, with every input path filled in.

    A path a stage section leaves empty is filled from the recipe's ``data`` section and the folders of
    earlier stages; this wiring is the only thing the runner knows about what stages read.
    """
    run_dir = Path(recipe.runs_dir) / recipe.name
    d = recipe.data
    dirs = {s.name: run_dir / s.folder for s in STAGES}
    target_train = list(d.target_train)
    stages: list[PlannedStage] = []

    def add(name: str, **inputs: Any) -> None:
        cfg = getattr(recipe, name)
        for key, value in inputs.items():
            if not getattr(cfg, key):
                setattr(cfg, key, value)
        _apply_data_settings(name, cfg, d)
        stages.append(PlannedStage(BY_NAME[name], dirs[name], cfg, is_done(dirs[name])))

    if recipe.prepare:
        add("prepare", input=target_train, lang=recipe.target_lang)

        from langadapt.corpus.prepare import output_files  # datatrove: only when a recipe prepares a corpus

        target_train = output_files(dirs["prepare"])
    if recipe.sweep:
        add("sweep", base=recipe.base_model, corpus=target_train, english_corpus=d.english_train)
    if recipe.extend:
        add("extend", base=recipe.base_model, corpus=target_train, english_corpus=d.english_train,
            english_heldout=d.english_valid, target_heldout=d.target_valid)  # fmt: skip
    tokenizer = str(dirs["extend"]) if recipe.extend else recipe.base_model
    models = [recipe.base_model]  # every model the run makes, in order; the last one trains next
    if recipe.init:
        add("init", model=recipe.base_model, tokenizer=tokenizer, kl_corpus=d.english_valid)
        models.append(str(dirs["init"]))
    if recipe.distill:
        add("distill", model=models[-1], teacher=recipe.base_model, corpus=target_train)
        models.append(str(dirs["distill"]))
    if recipe.pack:
        add("pack", tokenizer=tokenizer, target=target_train, english=d.english_train)
    if recipe.pretrain:
        add("pretrain", model=models[-1], data=str(dirs["pack"]), eval_target=d.target_valid,
            eval_english=d.english_valid)  # fmt: skip
        models.append(str(dirs["pretrain"] / "final"))
    if recipe.eval:
        add("eval", models=models, target=d.target_valid, english=d.english_valid)
    # Generation and multiple choice cost far more per model than bits per byte: by default they compare
    # the base model with the run's final one (a section that lists models keeps its own).
    compared = [models[0], models[-1]] if len(models) > 1 else models
    if recipe.make_choice:
        add("make_choice", pairs=d.parallel, tgt=recipe.target_lang)
    if recipe.choice:

        task = str(dirs["make_choice"] / TASK_JSONL) if recipe.make_choice else ""
        add("choice", models=compared, task=task)
    if recipe.translate:
        add("translate", models=compared, pairs=d.parallel, tgt=recipe.target_lang)
    if recipe.samples:
        add("samples", models=compared, target=d.target_valid, english=d.english_valid, tgt=recipe.target_lang)
    if recipe.speed:
        add("speed", models=compared, target=d.target_valid, english=d.english_valid, tgt=recipe.target_lang)
    final = _plan_alignment(recipe, add, dirs, models[-1], target_train)
    if recipe.export:  # what people run in llama.cpp / Ollama: the chat model when the run aligns one
        add("export", model=final, verify_target=d.target_valid, verify_english=d.english_valid)
    if recipe.report or any(getattr(recipe, name, None) for name in EVAL_STAGES):
        recipe.report = recipe.report or C.ReportConfig()
        add("report", run_dir=str(run_dir))
    return stages


def _plan_alignment(recipe: C.Recipe, add: Callable[..., None], dirs: dict[str, Path], adapted: str,
                    target_train: list[str]) -> str:  # fmt: skip
    """The chat stages, after the adapted model's evaluation: data make-chat, data translate, train sft,
    train dpo, eval chat. Planned last, they add to a run without changing what its evaluations compare,
    so a recipe that extends a finished base run (the chat demo) skips that run's stages. Returns the model
    the run ends with: the last aligned one, else ``adapted``."""
    d, chat_data = recipe.data, dirs["make_chat"]
    made = {role: [str(chat_data / name)] if recipe.make_chat else [] for role, name in FILES.items()}
    if recipe.make_chat:
        add("make_chat", pairs=d.parallel, target=target_train, english=d.english_train,
            target_heldout=d.target_valid, tgt=recipe.target_lang)  # fmt: skip
    translated: list[str] = []
    if recipe.data_translate:
        from langadapt.data.translate import TRANSLATED, output_names  # datatrove (language scripts)

        add("data_translate", input=made["to_translate"], translator=adapted, pairs=d.parallel, tgt=recipe.target_lang)
        inputs = [Path(p) for p in recipe.data_translate.input]
        translated = [str(dirs["data_translate"] / TRANSLATED / n) for n in output_names(inputs)]
    aligned = [adapted]  # the model before alignment, then each aligned one
    if recipe.sft:
        add("sft", model=adapted, data=made["sft_english"], translated=made["sft_target"] + translated,
            eval_english=d.english_valid, eval_target=d.target_valid)  # fmt: skip
        aligned.append(str(dirs["sft"] / "final"))
    if recipe.dpo:  # from the SFT folder on disk: trl reloads the reference from there
        add("dpo", model=aligned[-1], data=made["preferences_english"], translated=made["preferences_target"],
            eval_english=d.english_valid, eval_target=d.target_valid)  # fmt: skip
        aligned.append(str(dirs["dpo"] / "final"))
    if recipe.chat:  # the base model first where the section asks for it: what the run started from
        base = [recipe.base_model] if recipe.chat.first_is_base else []
        add("chat", models=base + aligned, preferences=(made["heldout_preferences"] or [""])[0],
            pairs=(made["heldout_pairs"] or [""])[0], prompts=(made["heldout_prompts"] or [""])[0],
            english=d.english_valid, tgt=recipe.target_lang,
            tgt_name=recipe.make_chat.tgt_name if recipe.make_chat else "")  # fmt: skip
    return aligned[-1]


def run_recipe(recipe: C.Recipe, *, dry_run: bool = False, log: Callable[[str], None] = print) -> Path:
    """Run every unfinished stage of ``recipe`` through the stage runner; return the run folder."""
    run_dir = Path(recipe.runs_dir) / recipe.name
    stages = plan(recipe)
    for stage in stages:  # a finished stage of another config is refused now, before any work
        if stage.skipped:
            check_finished(stage.name, stage.out, to_jsonable(stage.config), tuple(stage.stage.runtime_only),
                           config_defaults(stage.config))  # fmt: skip
    for stage in stages:
        state = "done, skipped" if stage.skipped else ("would run" if dry_run else "running")
        log(f"[{stage.name}] {state} -> {stage.out}")
    if dry_run:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", C.dump_recipe(recipe))
    for stage in stages:
        if not stage.skipped:
            log(f"[{stage.name}] started")
        record = run_stage(stage.stage, stage.config, stage.out, log=log)  # checks a finished one's config
        if not stage.skipped:
            log(f"[{stage.name}] done in {record.get('seconds', 0):.1f} s")
    return run_dir
