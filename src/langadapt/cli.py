"""The ``langadapt`` command: one subcommand per stage, plus ``run RECIPE`` and ``demo``.

Each subcommand builds its stage's config dataclass from the flags and calls the stage's one entry
function; nothing else happens here. A :class:`UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from langadapt import __version__
from langadapt import config as C
from langadapt.errors import UserError

app = typer.Typer(
    help="Teach a pretrained LLM a new language (SambaLingo / DictaLM 2.0 recipes).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tokenizer_app = typer.Typer(help="Extend a tokenizer and measure fertility.", no_args_is_help=True)
embeddings_app = typer.Typer(help="Initialise and distil new-token embeddings.", no_args_is_help=True)
eval_app = typer.Typer(help="Tokenizer-independent evaluation.", no_args_is_help=True)
data_app = typer.Typer(help="Mix and pack training data.", no_args_is_help=True)
train_app = typer.Typer(help="Continual pretraining.", no_args_is_help=True)
corpus_app = typer.Typer(help="Clean, filter and deduplicate raw text.", no_args_is_help=True)
for _name, _sub in [("tokenizer", tokenizer_app), ("embeddings", embeddings_app), ("eval", eval_app),
                    ("data", data_app), ("train", train_app), ("corpus", corpus_app)]:  # fmt: skip
    app.add_typer(_sub, name=_name)

# Options that take several values after one flag (``--corpus a.txt b.txt``); click has no nargs=-1
# for options, so main() rewrites them into repeated flags before click parses the line.
MULTI_VALUE_OPTIONS = {"--corpus", "--english-corpus", "--english-heldout", "--target-heldout", "--model",
                       "--target", "--english", "--input", "--eval-target", "--eval-english",
                       "--kl-corpus"}  # fmt: skip

Files = Annotated[list[Path], typer.Option(help="One or more corpus files (txt, jsonl[.gz], parquet, datasets folder).")]
OptFiles = Annotated[list[Path] | None, typer.Option(help="Optional corpus files.")]
TextField = Annotated[str, typer.Option(help="JSON field / column holding the text.")]
OutDir = Annotated[Path, typer.Option(help="Output folder (must not exist).")]


def _strs(paths: list[Path] | None) -> list[str]:
    return [str(p) for p in paths or []]


# ------------------------------------------------------------------------------------------ pipeline


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
) -> None:
    """Adapt SmolLM2-135M to Hungarian with the packaged corpus on a CPU, and show what changed."""
    _run_recipe_file(Path(__file__).parent / "recipes" / "demo-hu.yaml", runs_dir, dry_run)


def _run_recipe_file(path: Path, runs_dir: Path | None, dry_run: bool) -> None:
    """Load a recipe (its relative paths are relative to the file), run it, print the summary."""
    from langadapt.eval.report import print_summary
    from langadapt.pipeline import resolve_paths, run_recipe

    recipe = resolve_paths(C.load_recipe(path), path.resolve().parent)
    if runs_dir is not None:
        recipe.runs_dir = str(runs_dir)
    run_dir = run_recipe(recipe, dry_run=dry_run)
    if not dry_run:
        print_summary(run_dir)


@app.command()
def version() -> None:
    """Print the langadapt version."""
    print(__version__)


@app.command("model-path")
def model_path(name: Annotated[str, typer.Argument(help="Alias (smollm2-135m) or folder.")]) -> None:
    """Print the local HF folder of a model alias, converting it on first use."""
    from langadapt.models import resolve_model

    print(resolve_model(name))


# ----------------------------------------------------------------------------------------- tokenizer


@tokenizer_app.command("extend")
def tokenizer_extend(
    base: Annotated[str, typer.Option(help="Base model alias or folder.")],
    corpus: Files,
    num_new_tokens: Annotated[int, typer.Option(help="Tokens to add.")],
    out: OutDir,
    english_corpus: OptFiles = None,
    english_heldout: OptFiles = None,
    target_heldout: OptFiles = None,
    min_frequency: Annotated[int, typer.Option(help="Least count of a new merge.")] = 2,
    text_field: TextField = "text",
    max_docs: Annotated[int | None, typer.Option(help="Read at most this many documents.")] = None,
) -> None:
    """Continue the base tokenizer's BPE on target text and append the new tokens and merges."""
    from langadapt.tokenizer.extend import extend, print_extension

    cfg = C.ExtendConfig(base=base, corpus=_strs(corpus), english_corpus=_strs(english_corpus),
                         english_heldout=_strs(english_heldout), target_heldout=_strs(target_heldout),
                         num_new_tokens=num_new_tokens,
                         min_frequency=min_frequency, text_field=text_field, max_docs=max_docs)  # fmt: skip
    print_extension(extend(cfg, out))


@tokenizer_app.command("stats")
def tokenizer_stats(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or model alias.")],
    corpus: Files,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    text_field: TextField = "text",
    max_docs: Annotated[int | None, typer.Option(help="Read at most this many documents.")] = None,
) -> None:
    """Tokens per word (and per character), bytes per token, byte-fallback/unknown share."""
    from langadapt.tokenizer.metrics import print_stats
    from langadapt.tokenizer.metrics import tokenizer_stats as stats

    print_stats(stats(tokenizer, _strs(corpus), text_field=text_field, max_docs=max_docs), json_out)


@tokenizer_app.command("sweep")
def tokenizer_sweep(
    base: Annotated[str, typer.Option(help="Base model alias or folder.")],
    corpus: Files,
    out: OutDir,
    sizes: Annotated[str, typer.Option(help="Comma-separated numbers of new tokens.")] = "500,1000,2000,4000,8000,16000",
    english_corpus: OptFiles = None,
    text_field: TextField = "text",
) -> None:
    """Fertility against the number of added tokens: JSON + PNG, and a suggested size."""
    from langadapt.tokenizer.sweep import sweep

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise UserError(f"--sizes must be comma-separated integers, not {sizes!r}") from exc
    sweep(base, _strs(corpus), size_list, out, english_corpus=_strs(english_corpus), text_field=text_field)


# ---------------------------------------------------------------------------------------- embeddings


@embeddings_app.command("init")
def embeddings_init(
    model: Annotated[str, typer.Option(help="Base model alias or folder.")],
    tokenizer: Annotated[str, typer.Option(help="Extended tokenizer folder.")],
    out: OutDir,
    method: Annotated[str, typer.Option(help="mean-subword | mean | random")] = "mean-subword",
    output_remedy: Annotated[str, typer.Option(help="auto | shift | none: keep new output rows from taking mass.")] = "auto",
    output_shift: Annotated[float, typer.Option(help="Nats the shift remedy lowers new output rows by.")] = 2.0,
    pad_to_multiple_of: Annotated[int | None, typer.Option(help="Round rows up to a multiple.")] = 64,
    kl_corpus: OptFiles = None,
    seed: int = 0,
) -> None:
    """Resize the embeddings to the extended tokenizer and initialise every new row."""
    from langadapt.embeddings.init import init_embeddings

    cfg = C.InitConfig(model=model, tokenizer=tokenizer, method=method, output_remedy=output_remedy,
                       output_shift=output_shift, pad_to_multiple_of=pad_to_multiple_of,
                       kl_corpus=_strs(kl_corpus), seed=seed)  # fmt: skip
    init_embeddings(cfg, out)


@embeddings_app.command("distill")
def embeddings_distill(
    model: Annotated[str, typer.Option(help="Initialised extended model folder.")],
    teacher: Annotated[str, typer.Option(help="Original model alias or folder.")],
    corpus: Files,
    out: OutDir,
    steps: int = 100,
    calibrate_steps: int = 50,
    lr: float = 3e-3,
    calibrate_lr: Annotated[float | None, typer.Option(help="Stage-2 learning rate (default: lr / 10).")] = None,
    batch_size: int = 8,
    seq_len: int = 128,
    seed: int = 0,
    bf16: Annotated[bool | None, typer.Option(help="bf16 autocast (default: where faster).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints.")] = 50,
    text_field: TextField = "text",
) -> None:
    """DictaLM 2.0: train only the new rows to match the original model, then calibrate the head."""
    from langadapt.embeddings.distill import distill

    cfg = C.DistillConfig(model=model, teacher=teacher, corpus=_strs(corpus), steps=steps,
                          calibrate_steps=calibrate_steps, lr=lr, calibrate_lr=calibrate_lr,
                          batch_size=batch_size, seq_len=seq_len,
                          seed=seed, bf16=bf16, checkpoint_every=checkpoint_every, text_field=text_field)  # fmt: skip
    distill(cfg, out)


# ---------------------------------------------------------------------------------------------- eval


@eval_app.command("bpb")
def eval_bpb(
    model: Annotated[list[str], typer.Option(help="One or more models (aliases or folders).")],
    corpus: Files,
    max_docs: Annotated[int | None, typer.Option(help="Documents per corpus.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    batch_size: int = 8,
    max_len: Annotated[int, typer.Option(help="Window length in tokens.")] = 1024,
    stride: Annotated[int, typer.Option(help="Tokens scored per later window (< max-len).")] = 512,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (faster on CPUs with AVX512-BF16/AMX).")] = False,
    text_field: TextField = "text",
) -> None:
    """Bits per byte (and tokens per word) of several models on the same text."""
    from langadapt.eval.bpb import evaluate_bpb, print_bpb_table

    rows = evaluate_bpb(model, _strs(corpus), max_docs=max_docs, batch_size=batch_size, text_field=text_field,
                        max_len=max_len, stride=stride, bf16=bf16)  # fmt: skip
    print_bpb_table(rows, json_out)


# ------------------------------------------------------------------------------------ data and train


@data_app.command("pack")
def data_pack(
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or model alias.")],
    target: Files,
    english: Files,
    out: OutDir,
    ratio: float = 0.75,
    seq_len: int = 2048,
    tokens: Annotated[int, typer.Option(help="Token budget.")] = 1_000_000,
    max_epochs: Annotated[float, typer.Option(help="Repeat a source at most this often.")] = 4.0,
    seed: int = 0,
    workers: Annotated[int, typer.Option(help="Tokenizer processes (<= 1: in this process).")] = 2,
    shuffle_buffer: Annotated[int, typer.Option(help="Documents in each source's shuffle buffer.")] = 4096,
    text_field: TextField = "text",
) -> None:
    """Mix target and English text by token count and pack it into document-masked rows."""
    from langadapt.data.pack import pack, print_pack

    cfg = C.PackConfig(tokenizer=tokenizer, target=_strs(target), english=_strs(english), ratio=ratio,
                       seq_len=seq_len, tokens=tokens, max_epochs=max_epochs, seed=seed, workers=workers,
                       shuffle_buffer=shuffle_buffer, text_field=text_field)  # fmt: skip
    print_pack(pack(cfg, out), out)


@train_app.command("pretrain")
def train_pretrain(
    model: Annotated[str, typer.Option(help="Model folder to train.")],
    data: Annotated[Path, typer.Option(help="Packed data folder.")],
    out: Annotated[Path, typer.Option(help="Run folder (an unfinished one is resumed).")],
    eval_target: OptFiles = None,
    eval_english: OptFiles = None,
    train: Annotated[str, typer.Option(help="full | embeddings | new-embeddings | name patterns")] = "full",
    lr: float = 1e-4,
    warmup: float = 0.01,
    weight_decay: float = 0.1,
    micro_batch: int = 4,
    grad_accum: int = 1,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    bf16: Annotated[bool | None, typer.Option(help="bf16 autocast (default: where faster).")] = None,
    compile: bool = False,
    gradient_checkpointing: bool = False,
    attention: str = "auto",
    eval_every: int = 0,
    eval_max_docs: int = 64,
    select_metric: Annotated[str, typer.Option(help="target_bpb | english_bpb (picks final/)")] = "target_bpb",
    min_lr_ratio: Annotated[float, typer.Option(help="Final lr as a share of the peak.")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="Gradient-norm clipping (0: off).")] = 1.0,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    report_to: Annotated[str, typer.Option(help="auto | none | tensorboard,wandb")] = "auto",
    seed: int = 0,
) -> None:
    """Continual pretraining on packed, document-masked rows (accelerate; resumable)."""
    from langadapt.train.pretrain import pretrain

    cfg = C.PretrainConfig(model=model, data=str(data), eval_target=_strs(eval_target),
                           eval_english=_strs(eval_english), train=train, lr=lr, warmup=warmup,
                           weight_decay=weight_decay, micro_batch=micro_batch, grad_accum=grad_accum,
                           max_steps=max_steps, max_minutes=max_minutes, bf16=bf16, compile=compile,
                           gradient_checkpointing=gradient_checkpointing, attention=attention,
                           eval_every=eval_every, eval_max_docs=eval_max_docs, select_metric=select_metric,
                           min_lr_ratio=min_lr_ratio, grad_clip=grad_clip, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
                           report_to=report_to, seed=seed)  # fmt: skip
    pretrain(cfg, out)


@corpus_app.command("prepare")
def corpus_prepare(
    input: Annotated[list[str], typer.Option(help="Files or globs of raw text.")],
    lang: Annotated[str, typer.Option(help="ISO 639-1 code of the language to keep.")],
    out: OutDir,
    executor: Annotated[str, typer.Option(help="local | slurm | ray")] = "local",
    workers: Annotated[int, typer.Option(help="Local worker processes (-1: one per core).")] = 1,
    tasks: Annotated[int, typer.Option(help="datatrove tasks (input files are dealt out to them).")] = 1,
    text_field: TextField = "text",
    min_script_ratio: Annotated[float, typer.Option(help="Share of letters in the language's script.")] = 0.6,
    language_id: Annotated[bool, typer.Option(help="Drop other languages (py3langid).")] = True,
    min_words: Annotated[int, typer.Option(help="Shortest document kept, in words.")] = 10,
    minhash_threshold: Annotated[float, typer.Option(help="Near-duplicate Jaccard threshold.")] = 0.8,
    output_format: Annotated[str, typer.Option(help="jsonl.gz | parquet")] = "jsonl.gz",
    licenses: Annotated[list[str] | None, typer.Option(help="Licences of the sources (data card).")] = None,
    slurm_partition: Annotated[str, typer.Option(help="Slurm partition (--executor slurm).")] = "",
) -> None:
    """Clean, filter by script and language, and deduplicate raw text (datatrove)."""
    from langadapt.corpus.prepare import prepare, print_summary

    cfg = C.PrepareConfig(input=list(input), lang=lang, executor=executor, workers=workers, tasks=tasks,
                          text_field=text_field, min_script_ratio=min_script_ratio, language_id=language_id,
                          min_words=min_words, minhash_threshold=minhash_threshold,
                          output_format=output_format, licenses=list(licenses or []),
                          slurm_partition=slurm_partition)  # fmt: skip
    print_summary(prepare(cfg, out))


# ---------------------------------------------------------------------------------------------- main


def expand_multi_values(argv: list[str]) -> list[str]:
    """``--corpus a b --out x`` -> ``--corpus a --corpus b --out x``."""
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in MULTI_VALUE_OPTIONS else None
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


def _reuse_freed_memory() -> None:
    """Keep freed memory in the heap instead of returning it to the OS (glibc only).

    A CPU training step allocates and frees the same large tensors every time (the 4x512x57k logits
    alone are ~470 MB). glibc serves blocks over 32 MB with mmap and unmaps them on free, so every step
    page-faults them in again; on the VMs measured here that was ~35% system time, and keeping them in the
    heap made a SmolLM2 step ~25% faster with bit-identical results (bench/RESULTS.md). The price is
    peak RSS: the demo's went from 7.7 to 8.6 GB (the heap is trimmed only above 1 GB of free space).
    """
    import ctypes
    import platform

    if platform.system() != "Linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: leave it alone
        return
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)


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
    _reuse_freed_memory()
    try:
        app(args=args, prog_name="langadapt", standalone_mode=False)
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


if __name__ == "__main__":
    main()
