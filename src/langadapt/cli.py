"""The ``langadapt`` command: one subcommand per stage, derived from :data:`langadapt.stages.STAGES`.

Each stage subcommand has one option per field of its config dataclass (name, type, default, and help
from the field's docstring), builds the config from them and hands it to the stage runner, which owns
skip / resume / commit (:func:`langadapt.runs.run_stage`). Hand-written here: only what is not a stage
(``run``, ``demo``, ``tokenizer stats``, ``tokenizer verify``, ``model-path``, ``version``). A one-word stage command is a
top-level one (``report RUN_DIR``). A :class:`UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from langadapt import __version__
from langadapt import config as C
from langadapt.errors import UserError
from langadapt.runtime import reuse_freed_memory
from langadapt.stages import STAGES, Stage

app = typer.Typer(
    help="Teach a pretrained LLM a new language (SambaLingo / DictaLM 2.0 recipes).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
GROUPS = {
    "corpus": "Clean, filter and deduplicate raw text.",
    "tokenizer": "Extend a tokenizer and measure fertility.",
    "embeddings": "Initialise and distil new-token embeddings.",
    "data": "Mix and pack training data.",
    "train": "Continual pretraining, SFT and DPO.",
    "eval": "Tokenizer-independent evaluation.",
    "export": "Export a model for other runtimes (GGUF for llama.cpp).",
}
GROUPS = {name: typer.Typer(help=text, no_args_is_help=True) for name, text in GROUPS.items()}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


# ------------------------------------------------------------------------------------- not stages


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    dry_run: Annotated[bool, typer.Option(help="Only show which stages would run.")] = False,
    runs_dir: Annotated[Path | None, typer.Option(help="Override the recipe's runs_dir.")] = None,
) -> None:
    """Run every unfinished stage of a recipe into runs/<name>/ (finished stages are skipped)."""
    _run_recipe_file(recipe, runs_dir, dry_run)


@app.command()
def demo(
    runs_dir: Annotated[Path, typer.Option(help="Where the run folder goes.")] = Path("runs"),
    dry_run: Annotated[bool, typer.Option(help="Only show which stages would run.")] = False,
    chat: Annotated[bool, typer.Option(help="Then SFT + DPO on demonstration chat data (demo-hu-chat.yaml).")] = False,
    export: Annotated[bool, typer.Option(help="Then the generation speed-up and a GGUF checked in llama.cpp "
                                              "(demo-hu-export.yaml; ~6 more minutes on 2 cores).")] = False,
) -> None:
    """Adapt SmolLM2-135M to Hungarian with the packaged corpus on a CPU, and show what changed."""
    # Each flag is a recipe extending the base demo into the same run folder (finished stages are
    # skipped); with both, the export recipe's own sections join the chat recipe, so the chat model is
    # the one exported.
    recipes = Path(__file__).parent / "recipes"
    _run_recipe_file(recipes / ("demo-hu-chat.yaml" if chat else "demo-hu.yaml"), runs_dir, dry_run,
                     also=recipes / "demo-hu-export.yaml" if export else None)  # fmt: skip


EXPORT_SECTIONS = ("speed", "export")
"""What ``demo --export`` adds to the demo recipe it runs (demo-hu-export.yaml's own sections)."""


def _run_recipe_file(path: Path, runs_dir: Path | None, dry_run: bool, also: Path | None = None) -> None:
    """Load a recipe (its relative paths are relative to the file), run it, print the summary. ``also``:
    a recipe whose export sections are added to it."""
    from langadapt.eval.report import print_headline
    from langadapt.pipeline import load_recipe_file, run_recipe

    recipe = load_recipe_file(path)
    if also is not None:
        extra = load_recipe_file(also)
        for section in EXPORT_SECTIONS:
            setattr(recipe, section, getattr(extra, section))
    if runs_dir is not None:
        recipe.runs_dir = str(runs_dir)
    run_dir = run_recipe(recipe, dry_run=dry_run)
    if not dry_run:
        print_headline(run_dir)


@app.command()
def version() -> None:
    """Print the langadapt version."""
    print(__version__)


@app.command("model-path")
def model_path(name: Annotated[str, typer.Argument(help="Alias (smollm2-135m) or folder.")]) -> None:
    """Print the local HF folder of a model alias, converting it on first use."""
    from langadapt.models import resolve_model

    print(resolve_model(name))


@GROUPS["tokenizer"].command("stats")
def tokenizer_stats(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or model alias.")],
    corpus: Annotated[list[Path], typer.Option(help="One or more corpus files (txt, jsonl[.gz], parquet, datasets folder).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    text_field: Annotated[str, typer.Option(help="JSON field / column holding the text.")] = "text",
    max_docs: Annotated[int | None, typer.Option(help="Read at most this many documents.")] = None,
) -> None:
    """Tokens per word (and per character), bytes per token, byte-fallback/unknown share (writes nothing)."""
    from langadapt.tokenizer.metrics import print_stats
    from langadapt.tokenizer.metrics import tokenizer_stats as stats

    print_stats(stats(tokenizer, [str(p) for p in corpus], text_field=text_field, max_docs=max_docs), json_out)


@GROUPS["tokenizer"].command("verify")
def tokenizer_verify(
    base: Annotated[str, typer.Option(help="Base model alias, model folder or tokenizer folder.")],
    extended: Annotated[Path, typer.Option(help="Extended tokenizer folder (from tokenizer extend).")],
    corpus: Annotated[list[Path] | None, typer.Option(help="Texts that must round-trip (e.g. held-out target text).")] = None,
    english: Annotated[list[Path] | None, typer.Option(help="English texts whose ids must not change.")] = None,
    max_english_changed: Annotated[float, typer.Option(help="Share of English documents allowed to change.")] = 0.005,
    text_field: Annotated[str, typer.Option(help="JSON field / column holding the text.")] = "text",
    max_docs: Annotated[int | None, typer.Option(help="Read at most this many documents per corpus role.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check an extension: base ids unmoved, round-trips, English unchanged, new tokens reachable,
    tokenizer.model consistent. One line per failure; exit code 1 when something fails (writes nothing)."""
    from langadapt.corpus.readers import check_corpus, iter_documents
    from langadapt.models import resolve_tokenizer
    from langadapt.tokenizer.verify import print_verification, verify_extension

    docs = {role: list(iter_documents(check_corpus(files, text_field), text_field, max_docs)) if files else []
            for role, files in (("texts", corpus), ("english", english))}  # fmt: skip
    result = verify_extension(resolve_tokenizer(base), resolve_tokenizer(extended),
                              max_english_changed=max_english_changed, **docs)  # fmt: skip
    print_verification(result, json_out)
    if not result.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------- stages


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def stage_parameters(stage: Stage) -> list[inspect.Parameter]:
    """One ``--option`` per config field (type, default, help = the field's docstring), the stage's own
    options first (:func:`langadapt.config.option_fields`), then ``--out``; a stage of a run (``run_arg``)
    takes that field as its positional argument instead of ``--out``."""
    docs = C.field_docs(stage.config)
    hints = typing.get_type_hints(stage.config)
    params = []
    for f in C.option_fields(stage.config):
        help_text = docs.get(f.name, "") + (" (path)" if C.is_path_field(f) else "")
        if f.name == stage.run_arg:
            argument = typer.Argument(help=docs.get(f.name, ""), show_default=False, metavar=f.name.upper())
            params.insert(0, inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               annotation=Annotated[hints[f.name], argument]))  # fmt: skip
            continue
        option = typer.Option(help=help_text, show_default=not C.is_path_field(f))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f),
                                        annotation=Annotated[hints[f.name], option]))  # fmt: skip
    if stage.run_arg:
        return params
    out = typer.Option(help="Output folder (a finished one of the same config is skipped, an unfinished one "
                       "resumed where the stage can).")  # fmt: skip
    params.append(inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Path, out]))
    return params


def stage_command(stage: Stage) -> Callable[..., None]:
    """The subcommand of ``stage``: build its config from the flags, run it through the stage runner."""

    def command(**kwargs: Any) -> None:
        from langadapt.runs import run_stage

        if stage.run_arg:  # the output goes inside the run folder, which must exist
            run_dir = Path(kwargs[stage.run_arg])
            if not run_dir.is_dir():
                raise UserError("no such run folder", run_dir)
            out = run_dir / stage.folder
        else:
            out = kwargs.pop("out")
        # list(): a copy, since typer hands the same default list to every call
        cfg = stage.config(**{k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()})
        record = run_stage(stage, cfg, out)
        if record.get("skipped"):
            print(f"{out}: finished with the same config; skipped")
        printer = stage.printer()
        if printer is not None:
            printer(record, out)

    params = stage_parameters(stage)
    command.__signature__ = inspect.Signature(params)  # typer reads options from the signature
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = stage.help
    command.__name__ = stage.name
    return command


for _stage in STAGES:
    _group, _, _name = _stage.command.rpartition(" ")
    (GROUPS[_group] if _group else app).command(_name)(stage_command(_stage))


def multi_value_options(argv: list[str]) -> set[str]:
    """The options of the subcommand in ``argv`` that take several values (its list-typed config fields)."""
    command = " ".join(a for a in argv[:2] if not a.startswith("-"))
    stage = next((s for s in STAGES if s.command == command), None)
    if stage is None:
        return set()
    hints = typing.get_type_hints(stage.config)
    return {"--" + f.name.replace("_", "-") for f in dataclasses.fields(stage.config)
            if typing.get_origin(hints[f.name]) is list}  # fmt: skip


def expand_multi_values(argv: list[str]) -> list[str]:
    """``--corpus a b --out x`` -> ``--corpus a --corpus b --out x`` (click has no nargs=-1 for options)."""
    multi = multi_value_options(argv) | {"--corpus", "--english"}  # tokenizer stats / verify (hand-written)
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in multi else None
            out.append(arg)
            seen = 0
        elif current is not None:
            if seen:
                out.append(current)
            out.append(arg)
            seen += 1
        else:
            out.append(arg)
    return out


def _quiet_libraries() -> None:
    """No per-file "Loading weights" bars from transformers: stages print their own progress."""
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model and data path is local
    # accelerate imports DeepSpeed whenever it is installed, and DeepSpeed then warns on every start
    # without a GPU that it "fell back" to its CPU accelerator: expected on a CPU, noise in every command.
    expected = "Setting accelerator to CPU"
    logging.getLogger("DeepSpeed").addFilter(lambda record: expected not in record.getMessage())


def _click_exceptions() -> tuple[type, type, type]:
    """(usage error, abort, exit) of the click that typer runs on: its own copy since typer 0.2x (plain
    ``click.ClickException`` then misses every usage error), click itself before."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        from click import ClickException
    return ClickException, typer.Abort, typer.Exit


def main(argv: list[str] | None = None) -> None:
    click_error, abort, click_exit = _click_exceptions()
    args = expand_multi_values(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    reuse_freed_memory()
    try:
        # without standalone mode click returns a command's typer.Exit code instead of exiting with it
        code = app(args=args, prog_name="langadapt", standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click_error as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click_exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
