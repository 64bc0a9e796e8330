"""The bridge to lm-evaluation-harness: task folders that make lm-eval's ``hf`` backend read exactly what
``eval choice``, ``eval translate`` and ``eval bpb`` read (GitHub issue 10; docs/lm-eval.md).

Every one of those stages writes ``OUT/lm-eval/`` next to its results: lm-eval task YAMLs, the exact items
they score as local jsonl files, a loader (``langadapt_data.py``, the YAMLs' ``custom_dataset``: paths are
relative to it, so the folder can move), and ``README.md`` / ``index.json`` with the command line of every
model of the run. lm-eval itself is not needed to write the folder (only to run it: ``langadapt[lm-eval]``).

What makes lm-eval see the same token ids (read off ``lm_eval/models/huggingface.py`` and
``lm_eval/api/task.py`` of lm-eval 0.4.13; ``tests/test_lmeval_parity.py`` checks it):

* **Document start** (:func:`langadapt.tokenizer.document.document_start`). A tokenizer that adds its own BOS adds
  it in lm-eval too (lm-eval encodes with the tokenizer's special tokens), so its multiple-choice and
  translation tasks have no ``description``. For any other tokenizer the token's text (``<|endoftext|>``)
  is the task's ``description``, which lm-eval puts verbatim before every prompt, where the tokenizer reads
  it as that one special token: those tasks are a variant named ``..._endoftext``
  (:func:`task_name`). The text could not replace a BOS the tokenizer adds itself: a SentencePiece
  tokenizer (Metaspace ``prepend_scheme: first``) drops the word-start ``▁`` of the text after it.
* **Rolling log-likelihood** (bits per byte) reads a document after ``prefix_token_id`` and scores every
  token of ``tokenizer(text)``; ``add_bos_token=False`` keeps a BOS tokenizer from adding a second, scored
  BOS, and ``prefix_token_id=ID`` is the document-start token (lm-eval's default is the tokenizer's
  ``bos_token``, which for SmolLM2-Instruct is ``<|im_start|>``, not ``<|endoftext|>``).
* **Precision.** langadapt loads fp32 weights (``dtype=float32``) and, with bf16, autocasts
  (``mixed_precision_dtype=bfloat16``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from langadapt import __version__
from langadapt.eval.common import model_labels
from langadapt.models import load_tokenizer
from langadapt.prompts import CONTINUATION_TEMPLATE, QUERY_TEMPLATE, SHOT_SEPARATOR, SHOT_TEMPLATE, token_caps
from langadapt.runs import write_json_atomic, write_jsonl_atomic, write_text_atomic
from langadapt.tokenizer.document import DocStart, document_start

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from langadapt.config import ChoiceConfig, EvalConfig, TranslateConfig
    from langadapt.eval.choice import Item

LMEVAL_DIR = "lm-eval"
"""The folder every eval stage writes its lm-eval tasks into, next to its results."""
LOADER = "langadapt_data"
"""The loader module beside the YAMLs (``custom_dataset: !function langadapt_data.load``)."""
LMEVAL_VERSION = "lm-eval>=0.4.13,<0.5"
TASK_PREFIX = "langadapt"
LOADER_SOURCE = '''\
"""lm-eval ``custom_dataset`` of the langadapt tasks in this folder: each split is a jsonl file next to this
module (paths relative to it, so the folder can be moved), read as written."""

import json
from pathlib import Path


def load(files=None, **_):
    import datasets

    here = Path(__file__).resolve().parent
    return {
        split: datasets.Dataset.from_list(
            # split on "\\n" only: a JSON line may hold U+2028 or U+0085, which splitlines() cuts at
            [json.loads(line) for line in (here / name).read_text(encoding="utf-8").split("\\n") if line]
        )
        for split, name in (files or {}).items()
    }
'''


# ------------------------------------------------------------------------------------------ names


def prompt_prefix(start: DocStart) -> str:
    """Text lm-eval must put before every prompt: nothing when the tokenizer adds the token itself."""
    return "" if start.rule == "tokenizer prefix" else start.token


def task_name(base: str, start: DocStart) -> str:
    """``base`` for a tokenizer that adds its own BOS; ``base_<token>`` (``..._endoftext``) otherwise."""
    prefix = prompt_prefix(start)
    if not prefix:
        return base
    slug = re.sub(r"[^0-9a-z]+", "_", prefix.lower()).strip("_") or f"id{start.token_id}"
    return f"{base}_{slug}"


def translate_base(key: str) -> str:
    """The task name of a translation direction (``en-hu``: ``langadapt_translate_en_hu``)."""
    return f"{TASK_PREFIX}_translate_{re.sub(r'[^0-9A-Za-z]+', '_', key)}"


def model_args(path: str | Path, start: DocStart, *, bf16: bool, rolling: bool) -> str:
    """lm-eval ``--model_args`` of a model for our tasks (``rolling``: the bits-per-byte tasks)."""
    args = [f"pretrained={Path(path).resolve()}", "dtype=float32"]
    if bf16:
        args.append("mixed_precision_dtype=bfloat16")
    if rolling:
        args += ["add_bos_token=False", f"prefix_token_id={start.token_id}"]
    return ",".join(args)


def ids_match(tokenizer: PreTrainedTokenizerBase, start: DocStart, prompts: list[str]) -> bool:
    """Whether lm-eval's encoding of ``prompt_prefix + prompt`` (the tokenizer's special tokens on) is the
    document-start token and then our ids of every prompt."""
    if not prompts:
        return True
    ours = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    theirs = tokenizer([prompt_prefix(start) + p for p in prompts])["input_ids"]
    return all(t == [start.token_id, *o] for t, o in zip(theirs, ours))


# ---------------------------------------------------------------------------------------- writing


def _jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_jsonl_atomic(path, records)


class _Dumper(yaml.SafeDumper):
    """Writes a string that holds a newline, tab or carriage return double-quoted (``"\\n\\n"``)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(c in value for c in "\n\t\r") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _yaml(folder: Path, config: dict[str, Any]) -> None:
    """A task YAML: ``config`` and the loader line (a ``!function`` tag, which safe_dump cannot write)."""
    text = yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000,
                     default_flow_style=False)  # fmt: skip
    write_text_atomic(folder / f"{config['task']}.yaml", f"{text}custom_dataset: !function {LOADER}.load\n")


def _metrics(*names: str, higher: bool) -> list[dict[str, Any]]:
    return [{"metric": n, "higher_is_better": higher} for n in names]


def _metadata(stage: str) -> dict[str, Any]:
    return {"version": 1.0, "written_by": f"langadapt {__version__} ({stage})",
            "see": "README.md in this folder"}  # fmt: skip


def write_choice_tasks(folder: Path, items: list[Item], starts: list[DocStart],
                       base: str = f"{TASK_PREFIX}_choice") -> list[str]:  # fmt: skip
    """The multiple-choice task of ``eval choice`` (prompt ``{context}{question}``, continuation
    ``" " + choice``; acc, acc_norm, acc_bytes), one variant per distinct document start; its names."""
    assert CONTINUATION_TEMPLATE == " {choice}", "lm-eval's target_delimiter is the continuation's prefix"
    folder.mkdir(parents=True, exist_ok=True)
    data = "choice.jsonl"
    _jsonl(folder / data, [{"prompt": it.prompt, "choices": list(it.choices), "answer": it.answer}
                           for it in items])  # fmt: skip
    names = []
    for start in _variants(starts):
        names.append(task_name(base, start))
        _yaml(folder, {
            "task": names[-1], "output_type": "multiple_choice", "dataset_kwargs": {"files": {"test": data}},
            "test_split": "test", "num_fewshot": 0, "description": prompt_prefix(start),
            "doc_to_text": "prompt", "doc_to_choice": "choices", "doc_to_target": "answer",
            "target_delimiter": " ", "metric_list": _metrics("acc", "acc_norm", "acc_bytes", higher=True),
            "metadata": _metadata("eval choice"),
        })  # fmt: skip
    return names


def write_translate_task(folder: Path, key: str, shots: list[tuple[str, str]], prompts: list[str],
                         references: list[str], starts: list[DocStart],
                         max_gen_toks: int) -> list[str]:  # fmt: skip
    """One direction of ``eval translate`` (``key`` ``en-hu``; ``prompts`` as ``build_prompt`` made them):
    the same items, the same shots in the same order (a fewshot split holding exactly them, lm-eval's
    ``first_n`` sampler), ``"{src} = {tgt}"`` shots joined by a blank line, the query ``"{src} ="``;
    greedy until a newline, at most ``max_gen_toks`` tokens. One variant per distinct document start; its
    names."""
    # lm-eval renders a shot as doc_to_text + target_delimiter + doc_to_target + fewshot_delimiter
    assert SHOT_TEMPLATE == QUERY_TEMPLATE + " {tgt_text}", "a shot must be its query, a space, its target"
    head = "".join(SHOT_TEMPLATE.format(src_text=s, tgt_text=t) + SHOT_SEPARATOR for s, t in shots)
    if not all(p.startswith(head) for p in prompts):
        raise ValueError("the prompts do not start with these shots")
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"translate_{key}"
    files = {"test": f"{stem}.jsonl"}
    _jsonl(folder / files["test"], [{"query": p[len(head) :], "target": t}
                                    for p, t in zip(prompts, references)])  # fmt: skip
    config: dict[str, Any] = {"output_type": "generate_until", "test_split": "test"}
    if shots:
        files["fewshot"] = f"{stem}.shots.jsonl"
        _jsonl(folder / files["fewshot"], [{"query": QUERY_TEMPLATE.format(src_text=s), "target": t}
                                           for s, t in shots])  # fmt: skip
        config |= {"fewshot_split": "fewshot", "fewshot_config": {"sampler": "first_n"}}
    strip = {"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}
    names = []
    for start in _variants(starts):
        names.append(task_name(translate_base(key), start))
        _yaml(folder, {
            "task": names[-1], **config, "dataset_kwargs": {"files": files}, "num_fewshot": len(shots),
            "description": prompt_prefix(start), "doc_to_text": "query", "doc_to_target": "target",
            "target_delimiter": " ", "fewshot_delimiter": SHOT_SEPARATOR,
            "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": max_gen_toks},
            "filter_list": [strip], "metric_list": _metrics("chrf++", "chrf", "bleu", higher=True),
            "metadata": _metadata("eval translate"),
        })  # fmt: skip
    return names


def write_bpb_task(folder: Path, corpus: str, texts: list[str]) -> str:
    """Bits per byte of ``eval bpb`` on one held-out corpus (``target``, ``english``): lm-eval's
    ``loglikelihood_rolling`` over the same documents; its name."""
    folder.mkdir(parents=True, exist_ok=True)
    data, name = f"bpb_{corpus}.jsonl", f"{TASK_PREFIX}_bpb_{re.sub(r'[^0-9A-Za-z]+', '_', corpus)}"
    _jsonl(folder / data, [{"text": t} for t in texts])
    _yaml(folder, {
        "task": name, "output_type": "loglikelihood_rolling", "dataset_kwargs": {"files": {"test": data}},
        "test_split": "test", "num_fewshot": 0, "doc_to_text": "", "doc_to_target": "text",
        "metric_list": _metrics("word_perplexity", "byte_perplexity", "bits_per_byte", higher=False),
        "metadata": _metadata("eval bpb"),
    })  # fmt: skip
    return name


def _variants(starts: list[DocStart]) -> list[DocStart]:
    """One document start per task variant (the BOS tokenizers share one: lm-eval lets each add its own)."""
    seen: dict[str, DocStart] = {}
    for start in starts:
        seen.setdefault(prompt_prefix(start), start)
    return list(seen.values())


@dataclass
class ModelEntry:
    label: str
    path: Path
    start: DocStart
    tokenizer: Any


def _models(names: list[str], paths: list[Path]) -> list[ModelEntry]:
    out = []
    for label, path in zip(model_labels(names), paths):
        tokenizer = load_tokenizer(path)
        out.append(ModelEntry(label, Path(path), document_start(tokenizer), tokenizer))
    return out


def write_index(folder: Path, stage: str, models: list[dict[str, Any]], notes: list[str]) -> None:
    """``README.md`` (the command lines) and ``index.json`` (the same, per model) of a task folder."""
    write_json_atomic(folder / "index.json", {"stage": stage, "requires": LMEVAL_VERSION, "models": models,
                                              "notes": notes})  # fmt: skip
    intro = (f"Install `langadapt[lm-eval]` ({LMEVAL_VERSION}), then run from the stage's output folder "
             "(the parent of this one); docs/lm-eval.md says how these numbers relate to langadapt's.")
    lines = [f"# lm-eval tasks of this `{stage}` run", "", intro, ""]
    for m in models:
        about = (f"Document start {m['doc_start']!r} (id {m['doc_start_id']}, {m['doc_start_rule']}); "
                 f"tasks {', '.join(m['tasks'])}.")  # fmt: skip
        lines += [f"## {m['label']}", "", about, "", "```sh", m["command"], "```", ""]
        if not m["token_ids_match"]:
            lines += [WARN_IDS, ""]
    lines += [f"* {n}" for n in notes]
    write_text_atomic(folder / "README.md", "\n".join(lines).rstrip() + "\n")


WARN_IDS = ("**Warning:** lm-eval's encoding of these prompts differs from langadapt's for this tokenizer "
            "(the document-start text is not read as the one token); its numbers will not match.")


def _entry(m: ModelEntry, tasks: list[str], args: str, batch_size: int, ids_ok: bool) -> dict[str, Any]:
    command = (f"lm_eval --model hf --model_args {shlex.quote(args)} --include_path {LMEVAL_DIR} "
               f"--tasks {','.join(tasks)} --batch_size {batch_size} --log_samples "
               f"--output_path {shlex.quote(f'lm-eval-results/{m.label}')}")  # fmt: skip
    return {"label": m.label, "model_path": str(m.path.resolve()), "doc_start": m.start.token,
            "doc_start_id": m.start.token_id, "doc_start_rule": m.start.rule, "tasks": tasks,
            "model_args": args, "token_ids_match": ids_ok, "command": command}  # fmt: skip


# -------------------------------------------------------------------------------- stage entries

NOTE_CHOICE = ("acc, acc_norm and acc_bytes equal results.json's; lm-eval reports a stderr, not langadapt's "
               "95% interval or its McNemar test against the first model.")  # fmt: skip
NOTE_CAP = ("lm-eval generates up to one fixed max_gen_toks per task (the largest per-item cap of the run); "
            "langadapt caps each item by its reference's length in the model's own tokens. Outputs are the "
            "same wherever langadapt's ended at a newline or EOS before its cap (truncation_rate 0: all).")
NOTE_SCORES = ("chrf++, chrf and bleu (filter strip) are sacrebleu's corpus scores of the stripped outputs, "
               "as in results.json; lm-eval gives no bootstrap intervals, paired p-values, off-target rate.")
NOTE_WINDOWS = ("bits_per_byte equals metrics.json's bpb for documents that fit in one window (fewer tokens "
                "than max_len, and than lm-eval's max_length); on longer ones lm-eval's rolling windows keep "
                "one token of context where langadapt keeps max_len - stride: lm-eval's figure is higher.")
NOTE_WORDS = "word_perplexity counts words as re.split(r'\\s+'), langadapt's tokens_per_word as str.split()."


def export_choice(out: Path, items: list[Item], cfg: ChoiceConfig, paths: list[Path],
                  bf16: bool) -> None:  # fmt: skip
    """``eval choice``'s ``out/lm-eval/``."""
    folder = Path(out) / LMEVAL_DIR
    models = _models(cfg.models, paths)
    write_choice_tasks(folder, items, [m.start for m in models])
    _write_loader(folder)
    prompts = [it.prompt for it in items]
    entries = [_entry(m, [task_name(f"{TASK_PREFIX}_choice", m.start)],
                      model_args(m.path, m.start, bf16=bf16, rolling=False), cfg.batch_size,
                      ids_match(m.tokenizer, m.start, prompts)) for m in models]  # fmt: skip
    write_index(folder, "eval choice", entries, [NOTE_CHOICE])


def export_translate(out: Path, plans: dict[str, dict[str, Any]], cfg: TranslateConfig, paths: list[Path],
                     bf16: bool) -> None:  # fmt: skip
    """``eval translate``'s ``out/lm-eval/``: one task per direction; lm-eval's fixed ``max_gen_toks`` is
    the largest per-item cap any model of the run had in that direction."""
    folder = Path(out) / LMEVAL_DIR
    models = _models(cfg.models, paths)
    tasks: dict[str, list[str]] = {m.label: [] for m in models}
    for key, plan in plans.items():
        cap = max(max(token_caps(m.tokenizer, plan["references"], cfg.max_new_tokens_factor,
                                 cfg.max_new_tokens_extra), default=1) for m in models)  # fmt: skip
        write_translate_task(folder, key, plan["shots"], plan["prompts"], plan["references"],
                             [m.start for m in models], cap)  # fmt: skip
        for m in models:
            tasks[m.label].append(task_name(translate_base(key), m.start))
    _write_loader(folder)
    prompts = [p for plan in plans.values() for p in plan["prompts"]]
    entries = [_entry(m, tasks[m.label], model_args(m.path, m.start, bf16=bf16, rolling=False),
                      cfg.batch_size, ids_match(m.tokenizer, m.start, prompts)) for m in models]  # fmt: skip
    write_index(folder, "eval translate", entries, [NOTE_CAP, NOTE_SCORES])


def export_bpb(out: Path, texts: dict[str, list[str]], cfg: EvalConfig, paths: list[Path],
               bf16: bool) -> None:  # fmt: skip
    """``eval bpb``'s ``out/lm-eval/``: one rolling-log-likelihood task per held-out corpus."""
    folder = Path(out) / LMEVAL_DIR
    names = [write_bpb_task(folder, corpus, docs) for corpus, docs in texts.items()]
    _write_loader(folder)
    entries = [_entry(m, names, model_args(m.path, m.start, bf16=bf16, rolling=True), cfg.batch_size, True)
               for m in _models(cfg.models, paths)]  # fmt: skip
    write_index(folder, "eval bpb", entries, [NOTE_WINDOWS, NOTE_WORDS])


def _write_loader(folder: Path) -> None:
    write_text_atomic(folder / f"{LOADER}.py", LOADER_SOURCE)
