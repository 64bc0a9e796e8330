"""Chat and preference data for ``train sft`` / ``train dpo``: read, check every record up front, mix.

Formats (jsonl / jsonl.gz, parquet, or a ``datasets`` folder saved with ``save_to_disk``):

* **chat** (SFT): ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` with
  at least one assistant turn (ultrachat_200k's ``messages`` column as it is).
* **preference** (DPO): ``{"chosen": ..., "rejected": ...}`` with an optional ``"prompt"``. Each of them is
  plain text or a list of messages; without a prompt, chosen and rejected are whole conversations and the
  prompt is their common beginning (trl's ``extract_prompt``; ultrafeedback_binarized, whose string
  ``prompt`` repeats the user turn, is read this way too). Every pair becomes conversational
  ``{"prompt": [...], "chosen": [assistant...], "rejected": [assistant...]}`` so the chat template applies.

A bad record is a UserError naming the file and the line (or row) before any model is loaded. Messages keep
only ``role`` and ``content``, so sources with extra keys still interleave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langadapt.corpus.readers import expand_paths, iter_records
from langadapt.errors import UserError
from langadapt.train.chat import ROLES

CHAT_HELP = 'a chat record is {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}'
PAIR_HELP = 'a preference record is {"chosen": ..., "rejected": ...} with an optional "prompt"'


def _messages(value: Any, where: str, key: str, path: Path) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {key!r} must be a non-empty list of messages", path)
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UserError(f"{where}: {key}[{i}] must be an object with 'role' and 'content'", path)
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise UserError(f"{where}: {key}[{i}] has role {role!r} (one of {', '.join(ROLES)})", path)
        if not isinstance(content, str):
            raise UserError(f"{where}: {key}[{i}] content must be a string", path)
        if role == "system" and i > 0:
            raise UserError(f"{where}: {key}[{i}]: a system message may only come first", path)
        out.append({"role": role, "content": content})
    return out


def chat_example(record: dict[str, Any], where: str, path: Path) -> dict[str, Any]:
    """``{"messages": [...]}`` checked: known roles, string contents, an assistant turn with text."""
    if "messages" not in record:
        raise UserError(f"{where}: no 'messages' ({CHAT_HELP})", path)
    messages = _messages(record["messages"], where, "messages", path)
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise UserError(f"{where}: no assistant message with text (nothing to learn from)", path)
    return {"messages": messages}


def preference_example(record: dict[str, Any], where: str, path: Path) -> dict[str, Any]:
    """``{"prompt": [...], "chosen": [...], "rejected": [...]}``, conversational, checked."""
    from trl.data_utils import extract_prompt

    for key in ("chosen", "rejected"):
        if key not in record:
            raise UserError(f"{where}: no {key!r} ({PAIR_HELP})", path)
    pair = {k: _turns(record[k], "assistant", where, k, path) for k in ("chosen", "rejected")}
    prompt = record.get("prompt")
    implicit = isinstance(record["chosen"], list) and pair["chosen"][0]["role"] != "assistant"
    if implicit:  # whole conversations: the prompt is what chosen and rejected share
        pair = extract_prompt(pair)
    elif prompt is None:
        raise UserError(f"{where}: no 'prompt' (chosen and rejected are answers, not whole conversations)", path)
    else:
        pair["prompt"] = _turns(prompt, "user", where, "prompt", path)
    if not pair["prompt"] or pair["prompt"][-1]["role"] != "user":
        raise UserError(f"{where}: the prompt must end with a user message", path)
    for key in ("chosen", "rejected"):
        if not pair[key] or any(m["role"] != "assistant" for m in pair[key]):
            raise UserError(f"{where}: {key!r} must be the assistant's answer to the prompt", path)
    if pair["chosen"] == pair["rejected"]:
        raise UserError(f"{where}: 'chosen' and 'rejected' are the same", path)
    return {"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"]}


def _turns(value: Any, role: str, where: str, key: str, path: Path) -> list[dict[str, str]]:
    """Plain text as one ``role`` message, or a checked list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return _messages(value, where, key, path)


def read_examples(files: list[str], kind: str, max_examples: int | None = None) -> list[dict[str, Any]]:
    """Every record of ``files`` (globs expanded) as checked ``kind`` examples (``chat`` / ``preference``)."""
    make = {"chat": chat_example, "preference": preference_example}[kind]
    out: list[dict[str, Any]] = []
    paths = expand_paths(files)
    for path in paths:
        for where, record in iter_records(Path(path)):
            if max_examples is not None and len(out) >= max_examples:
                return out
            out.append(make(record, where, Path(path)))
    # One empty file among others is allowed: data translate's output is empty when its filter drops
    # every item (a weak translator), and the source's other files still count.
    if paths and not out:
        raise UserError(f"holds no {kind} records", paths[0])
    return out


def mix(english: list[dict[str, Any]], translated: list[dict[str, Any]], *, ratio: float, strategy: str,
        seed: int) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """English and translated examples interleaved by ``ratio`` (datasets.interleave_datasets, each source
    shuffled first); returns the Dataset and what the mix holds, for stage.json."""
    from datasets import Dataset, interleave_datasets

    sources = {"english": english, "translated": translated}
    weights = {"english": 1 - ratio, "translated": ratio}
    used = {name: Dataset.from_list([{**ex, "source": name} for ex in rows]).shuffle(seed=seed)
            for name, rows in sources.items() if rows and weights[name] > 0}  # fmt: skip
    if not used:
        raise UserError("no training data: give data (English) and/or translated, with a ratio that uses them")
    if len(used) == 1:
        mixed = next(iter(used.values()))
    else:
        mixed = interleave_datasets(list(used.values()), probabilities=[weights[n] for n in used], seed=seed,
                                    stopping_strategy=strategy)  # fmt: skip
    counts = {name: 0 for name in sources}
    for name in mixed["source"]:
        counts[name] += 1
    record = {"ratio": ratio, "strategy": strategy, "examples": len(mixed), **{f"{n}_examples": c for n, c in counts.items()},
              **{f"{n}_read": len(rows) for n, rows in sources.items()},
              "translated_share": counts["translated"] / max(len(mixed), 1)}  # fmt: skip
    return mixed.remove_columns("source"), record


def read_mix(english_files: list[str], translated_files: list[str], kind: str, *, ratio: float, strategy: str,
             seed: int, max_examples: int | None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """:func:`read_examples` of both sources (a source the ratio leaves out is still checked), then :func:`mix`."""
    if ratio < 1 and not english_files:
        raise UserError(f"ratio {ratio} takes English examples: give data (English {kind} data)")
    if ratio > 0 and not translated_files:
        raise UserError(f"ratio {ratio} takes translated examples: give translated ({kind} data in the target "
                        "language) or set ratio 0")  # fmt: skip
    english = read_examples(english_files, kind, max_examples) if english_files else []
    translated = read_examples(translated_files, kind, max_examples) if translated_files else []
    return mix(english, translated, ratio=ratio, strategy=strategy, seed=seed)
