"""THE list of stages. The CLI subcommands, the recipe runner's plan, path resolution and the recipe
reference (docs/recipes.md) are all derived from it.

Adding a stage = one config dataclass in its family's module of :mod:`langadapt.config` (built on the
shared bases there: runtime settings, text field, model list) + one entry function
``fn(cfg, work: Path) -> dict`` that only computes (into ``work``; it returns the figures stage.json
records) + one line here + its wiring in :func:`langadapt.pipeline.plan`. The protocol around it
(skip, refuse, resume, atomic commit, stage.json, DONE) is :func:`langadapt.runs.run_stage`'s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt import config as C


@dataclass(frozen=True)
class Stage:
    name: str
    """Recipe section and stage.json ``stage``."""
    command: str
    """CLI subcommand, ``"group name"``."""
    folder: str
    """Folder inside a run directory."""
    config: type
    """The config dataclass: every field is a CLI option and a recipe key."""
    entry: str
    """``module:function`` computing the stage, ``fn(cfg, work) -> figures`` (imported when it runs)."""
    help: str
    """One line for ``--help``."""
    resumable: bool = False
    """An unfinished work folder of the same config is continued (the stage keeps checkpoints there)."""
    runtime_only: tuple[str, ...] = ("device",)
    """Config keys that may differ between a run and its resume or rerun without changing its result."""
    show: str | None = None
    """``module:function`` printing a finished stage's record on the terminal (CLI only)."""
    commits_itself: bool = False
    """The stage commits its own output through :func:`langadapt.runs.commit` (datatrove's last job)."""
    rebuild: bool = False
    """Derived from other stages' records: a finished output is replaced on every run (never skipped or
    refused)."""
    run_arg: str | None = None
    """Config field naming a run folder: the subcommand's positional argument, and the output goes to
    ``<that folder>/<folder>`` (no ``--out``)."""

    def function(self) -> Callable[[Any, Path], dict[str, Any]]:
        return _load(self.entry)

    def printer(self) -> Callable[[dict[str, Any], Path], None] | None:
        return _load(self.show) if self.show else None


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "corpus prepare", "corpus", C.PrepareConfig, "langadapt.corpus.prepare:prepare",
          "Clean, filter by script and language, and deduplicate raw text (datatrove).", resumable=True,
          runtime_only=("workers", "slurm_time", "cpus_per_task", "mem_per_cpu_gb", "ray_address"),
          show="langadapt.corpus.prepare:print_summary", commits_itself=True),
    Stage("sweep", "tokenizer sweep", "sweep", C.SweepConfig, "langadapt.tokenizer.sweep:sweep",
          "Fertility against the number of added tokens: JSON + PNG, and a suggested size.",
          show="langadapt.tokenizer.sweep:print_sweep"),
    Stage("extend", "tokenizer extend", "tokenizer", C.ExtendConfig, "langadapt.tokenizer.extend:extend",
          "Continue the base tokenizer's BPE on target text and append the new tokens and merges.",
          runtime_only=("workers",), show="langadapt.tokenizer.extend:print_extension"),
    Stage("init", "embeddings init", "model", C.InitConfig, "langadapt.embeddings.init:init_embeddings",
          "Resize the embeddings to the extended tokenizer and initialise every new row."),
    Stage("distill", "embeddings distill", "distill", C.DistillConfig, "langadapt.embeddings.distill:distill",
          "DictaLM 2.0: train only the new rows to match the original model, then calibrate the head.",
          resumable=True, runtime_only=("device", "report_to")),
    Stage("pack", "data pack", "packed", C.PackConfig, "langadapt.data.pack:pack",
          "Mix target and English text by token count and pack it into document-masked rows.",
          runtime_only=("workers",), show="langadapt.data.pack:print_pack"),
    Stage("data_translate", "data translate", "translated", C.DataTranslateConfig,
          "langadapt.data.translate:data_translate",
          "Translate chat / preference jsonl with a local model: masked code and placeholders, quality filters, "
          "resumable per item.", resumable=True, show="langadapt.data.translate:print_data_translate"),
    Stage("pretrain", "train pretrain", "pretrain", C.PretrainConfig, "langadapt.train.pretrain:pretrain",
          "Continual pretraining on packed, document-masked rows (accelerate; resumable).", resumable=True,
          runtime_only=("device", "max_minutes", "report_to")),
    Stage("sft", "train sft", "sft", C.SftConfig, "langadapt.train.sft:sft",
          "Supervised fine-tuning on chat data, English and translated mixed (trl SFTTrainer; resumable).",
          resumable=True, runtime_only=("device", "report_to"), show="langadapt.train.align:print_align"),
    Stage("dpo", "train dpo", "dpo", C.DpoConfig, "langadapt.train.dpo:dpo",
          "Direct preference optimisation from the SFT model, English and translated pairs (trl DPOTrainer).",
          resumable=True, runtime_only=("device", "report_to"), show="langadapt.train.align:print_align"),
    Stage("eval", "eval bpb", "eval", C.EvalConfig, "langadapt.eval.bpb:evaluate",
          "Bits per byte and tokens per word of several models on the same held-out text.",
          show="langadapt.eval.report:print_eval"),
    Stage("make_choice", "eval make-choice", "choice-task", C.MakeChoiceConfig, "langadapt.eval.choice_task:make_choice",
          "A pick-the-right-translation multiple-choice task from parallel text (length-matched distractors).",
          runtime_only=(), show="langadapt.eval.choice_task:print_make_choice"),
    Stage("choice", "eval choice", "eval-choice", C.ChoiceConfig, "langadapt.eval.choice:evaluate_choice",
          "Multiple-choice accuracy (acc, acc_norm, acc_bytes) of several models, scored as lm-eval does.",
          show="langadapt.eval.choice:print_choice"),
    Stage("translate", "eval translate", "eval-translate", C.TranslateConfig, "langadapt.eval.translate:evaluate_translate",
          "Few-shot translation (greedy) of several models on parallel text: chrF++, chrF, BLEU, off-target rate.",
          show="langadapt.eval.translate:print_translate"),
    Stage("samples", "eval samples", "eval-samples", C.SamplesConfig, "langadapt.eval.samples:generate_samples",
          "Greedy continuations of fixed prompts (target language and English) by several models, to read.",
          show="langadapt.eval.samples:print_samples"),
    Stage("speed", "eval speed", "eval-speed", C.SpeedConfig, "langadapt.eval.speed:evaluate_speed",
          "Words per second generated (target and English) by several models in transformers and llama.cpp, "
          "beside tokens per word.", show="langadapt.eval.speed:print_speed"),
    Stage("make_chat", "data make-chat", "chat-data", C.MakeChatConfig, "langadapt.data.chat_data:make_chat",
          "Demonstration chat and preference data from monolingual and parallel text (translation, heading tasks).",
          runtime_only=()),
    Stage("chat", "eval chat", "eval-chat", C.EvalChatConfig, "langadapt.eval.chat:evaluate_chat",
          "Chat-template evaluation: preference accuracy and margin, chat translation chrF++, answers' language "
          "and repetition, English bpb.", show="langadapt.eval.chat:print_chat"),
    Stage("export", "export gguf", "export", C.ExportConfig, "langadapt.export.gguf:export_gguf",
          "One GGUF file by llama.cpp's own converter, checked in a real llama.cpp runtime (tokenization, bpb, greedy).",
          runtime_only=("llama_lib", "threads"), show="langadapt.export.gguf:print_export"),
    Stage("report", "report", "report", C.ReportConfig, "langadapt.eval.report:build_report",
          "report.md and plots/ from a run's own records (tables, plots, samples, timings, recipe).",
          runtime_only=(), show="langadapt.eval.report:print_report", rebuild=True, run_arg="run_dir"),
)  # fmt: skip

BY_NAME = {stage.name: stage for stage in STAGES}


def recipe_reference() -> str:
    """Markdown reference of every recipe key and CLI option (docs/recipes.md; a test keeps it in sync)."""
    import dataclasses

    intro = "Generated from the stage list in `langadapt/stages.py` by `python -m langadapt.stages > docs/recipes.md`."
    about = (f"{intro} Unknown keys are errors. Each stage's section of a recipe has exactly the options of its "
             "subcommand (`--num-new-tokens` is `num_new_tokens`); path options left empty in a recipe are "
             "filled by the runner from the `data` section and earlier stages' folders.")
    lines = ["# Recipe and option reference", "", about, ""]
    sections = [("top level", C.Recipe, None), ("data", C.DataConfig, None)]
    sections += [(s.name, s.config, s) for s in STAGES]
    for section, cls, stage in sections:
        docs = C.field_docs(cls)
        lines.append(f"## `{section}` ({cls.__name__})")
        if stage is not None:
            usage = f"{stage.command} RUN_DIR" if stage.run_arg else f"{stage.command} ... --out DIR"
            lines += ["", f"`langadapt {usage}` — {stage.help} Run folder: `{stage.folder}/`."]
        lines += ["", "| key | default | meaning |", "|---|---|---|"]
        for f in C.option_fields(cls):  # the section's own keys first
            if cls is C.Recipe and f.name in ("data", *BY_NAME):
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "required"
            kind = " (path)" if C.is_path_field(f) else ""
            lines.append(f"| `{f.name}` | `{default}` | {docs.get(f.name, '')}{kind} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(recipe_reference(), end="")
