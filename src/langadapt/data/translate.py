"""``data translate``: chat and preference data into the target language with a local model (issue 11).

* **Items.** Chat items (``{"messages": [{"role", "content"}, ...]}``, any number of turns) and preference
  items (``{"prompt", "chosen", "rejected"}``, each plain text or a message list). Every system, user and
  assistant message is translated separately, a preference item's prompt once; other roles, other fields
  and non-text contents are copied. Each text is masked first (:mod:`langadapt.data.protect`: code blocks
  are never sent, markdown marks stay, code, URLs and placeholders become sentinels) and sent a line at a
  time (:mod:`langadapt.data.translators`).
* **Filters**, in this order (:data:`REASONS`; an item is dropped whole, for the first one any of its texts
  fails): duplicate (of an earlier item), broken placeholders, empty translation (no letters), untranslated
  copy, length ratio, script ratio and language id (the corpus stage's identifiers), round-trip chrF (the
  translation translated back, sacrebleu's sentence chrF against the source). Every drop is counted in
  ``summary.json`` and written to ``rejects.jsonl`` with its reason and the failed measure.
* **Resume.** Item ids hash the item, the translator(s) and the prompt (:data:`PROMPT_VERSION`, shots,
  sentinel, caps). Results are appended to ``progress/part-N.jsonl`` in the work folder, one write and
  fsync per batch; a rerun skips every id found there (a line cut by a kill is ignored) and writes a new
  part. The outputs are then written in input order from those records, so a run killed halfway and
  rerun gives the same files as one uninterrupted run.

Output: ``translated/<input name>.jsonl`` (the input's schema with texts translated, ``id`` and
``source_id`` first), ``rejects.jsonl``, ``summary.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langadapt.config import DataTranslateConfig
from langadapt.corpus.readers import expand_paths, iter_json_records, read_pairs
from langadapt.corpus.scripts import langid_model, script_pattern, script_ratio, scripts_for, words
from langadapt.data import translators as M
from langadapt.data.protect import LETTER, SENTINELS, Masked, Sentinel, mask, plain, unmask
from langadapt.data.tokens import file_sha256
from langadapt.errors import UserError
from langadapt.models import resolve_model
from langadapt.prompts import SHOT_SPLITS, choose_shots, one_line
from langadapt.runs import write_json_atomic, write_jsonl_atomic
from langadapt.runtime import resolve_device, use_bf16

REASONS = ("duplicate", "broken placeholders", "empty translation", "untranslated copy", "length ratio",
           "script ratio", "language id", "round-trip chrF")  # fmt: skip
TRANSLATED_ROLES = ("system", "user", "assistant")
PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
MIN_LENGTH_CHARS = 20
"""The length ratio is checked for sources of at least this many characters (protected spans left out)."""
PROGRESS, TRANSLATED, REJECTS, SUMMARY = "progress", "translated", "rejects.jsonl", "summary.json"

Translate = Callable[[list[str]], list[str]]


@dataclass
class Item:
    record: dict[str, Any]
    kind: str
    """chat or preference."""
    file: int
    """Index of its input file."""
    line: int
    source_id: str
    id: str = ""


# ------------------------------------------------------------------------------------- reading


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m
                                           for m in value)  # fmt: skip


def _item_kind(rec: dict[str, Any], kind: str, path: Path, line: int) -> str:
    if kind == "auto":
        if "messages" in rec:
            kind = "chat"
        elif any(k in rec for k in PREFERENCE_KEYS):
            kind = "preference"
        else:
            raise UserError(f"line {line} is neither chat data ('messages') nor preference data ('prompt', "
                            "'chosen', 'rejected'); set --kind", path)  # fmt: skip
    if kind == "chat":
        if "messages" not in rec:
            raise UserError(f"line {line} has no 'messages' (chat data: {{\"messages\": [{{\"role\", \"content\"}}, "
                            "...]}})", path)  # fmt: skip
        if not _is_messages(rec["messages"]) or not rec["messages"]:
            raise UserError(f"line {line}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects",
                            path)  # fmt: skip
        return kind
    for key in PREFERENCE_KEYS:
        if key not in rec:
            raise UserError(f"line {line} has no {key!r} (preference data needs 'prompt', 'chosen' and "
                            "'rejected')", path)  # fmt: skip
        if not isinstance(rec[key], str) and not _is_messages(rec[key]):
            raise UserError(f"line {line}: {key!r} must be text or a list of {{\"role\", \"content\"}} objects", path)
    return kind


def read_items(paths: list[Path], kind: str, max_items: int | None) -> list[Item]:
    """Every item of the input files in order (``max_items`` at most), checked; a file's first item decides
    its kind under ``auto``."""
    items: list[Item] = []
    for index, path in enumerate(paths):
        file_kind = kind
        for line, rec in iter_json_records(path):
            if max_items is not None and len(items) >= max_items:
                return items
            file_kind = _item_kind(rec, file_kind, path, line)
            own = rec.get("id")
            source_id = str(own) if isinstance(own, (str, int)) and not isinstance(own, bool) else f"{path.name}:{line}"
            items.append(Item(rec, file_kind, index, line, source_id))
    return items


def text_fields(record: dict[str, Any], kind: str) -> list[tuple]:
    """Addresses (key path tuples) of the texts to translate, in order."""

    def messages(base: str) -> list[tuple]:
        return [(base, i, "content") for i, m in enumerate(record[base]) if m.get("role") in TRANSLATED_ROLES
                and isinstance(m.get("content"), str) and m["content"].strip()]  # fmt: skip

    if kind == "chat":
        return messages("messages")
    out: list[tuple] = []
    for key in PREFERENCE_KEYS:
        if isinstance(record[key], str):
            out += [(key,)] if record[key].strip() else []
        else:
            out += messages(key)
    return out


def _get(record: Any, address: tuple) -> Any:
    for key in address:
        record = record[key]
    return record


def _set(record: Any, address: tuple, value: Any) -> None:
    _get(record, address[:-1])[address[-1]] = value


# ------------------------------------------------------------------------------------- filters


@dataclass
class Text:
    """One translated text of an item."""

    address: tuple
    masked: Masked
    outputs: list[str]
    restored: str | None
    source: str = ""
    """Its segments without sentinels, joined (what the checks compare)."""
    output: str = ""
    back: list[str] = field(default_factory=list)


def _check(reason: str, text: Text, f: DataTranslateConfig, sentinel: Sentinel) -> str | None:
    """What failed, or None; ``reason`` one of :data:`REASONS` after duplicate."""
    src, out = text.source, text.output
    if reason == "broken placeholders":
        return None if text.restored is not None else "sentinels lost, repeated or made up"
    if reason == "empty translation":
        return None if LETTER.search(out) else "no letters"
    if reason == "untranslated copy":
        return "identical to the source" if out.casefold() == src.casefold() and len(words(src)) >= 2 else None
    if reason == "length ratio" and len(src) >= MIN_LENGTH_CHARS:
        ratio = len(out) / len(src)
        inside = f.min_length_ratio <= ratio <= f.max_length_ratio
        return None if inside else f"{ratio:.2f} outside [{f.min_length_ratio}, {f.max_length_ratio}]"
    if reason == "script ratio":
        ratio, letters = script_ratio(out, script_pattern(scripts_for(f.tgt)))
        return f"{ratio:.2f} < {f.min_script_ratio}" if letters and ratio < f.min_script_ratio else None
    if reason == "language id" and f.language_id:
        if sum(c.isalpha() for c in out) < f.langid_min_letters:
            return None
        lang, _ = langid_model().classify(out)
        return None if lang == f.tgt else f"identified as {lang}"
    if reason == "round-trip chrF" and f.round_trip:
        score = round_trip_chrf(text, sentinel)
        return f"{score:.1f} < {f.min_round_trip_chrf}" if score < f.min_round_trip_chrf else None
    return None


def round_trip_chrf(text: Text, sentinel: Sentinel) -> float:
    from sacrebleu.metrics import CHRF

    back = plain(" ".join(text.back), sentinel)
    return float(CHRF().sentence_score(back, [text.source]).score)


def _translate_unique(translate: Translate, texts: list[str]) -> list[str]:
    """``translate`` on each distinct text once (a shared system prompt is translated once a batch)."""
    unique = list(dict.fromkeys(texts))
    done = dict(zip(unique, translate(unique) if unique else []))
    return [done[t] for t in texts]


def translate_items(items: list[Item], forward: Translate, back: Translate | None, filters: DataTranslateConfig,
                    sentinel: Sentinel = SENTINELS[0]) -> list[dict[str, Any]]:  # fmt: skip
    """Translate, restore and check ``items`` (one batch): one result per item, in order.

    ``forward`` / ``back`` translate a list of masked segments src to tgt / tgt to src (the tests pass
    plain functions; the stage passes a model)."""
    plans = [[(a, mask(_get(it.record, a), sentinel)) for a in text_fields(it.record, it.kind)] for it in items]
    segments = [s.text for plan in plans for _, m in plan for s in m.segments]
    outputs = iter(_translate_unique(forward, segments))
    texts: list[list[Text]] = []
    for plan in plans:
        texts.append([])
        for address, masked in plan:
            outs = [next(outputs) for _ in masked.segments]
            t = Text(address, masked, outs, unmask(masked, outs, sentinel))
            t.source = plain(" ".join(s.text for s in masked.segments), sentinel)
            t.output = plain(" ".join(outs), sentinel)
            texts[-1].append(t)
    verdicts = [_first_failure(ts, filters, sentinel, REASONS[1:-1]) for ts in texts]
    if filters.round_trip and back is not None:
        survivors = [t for ts, v in zip(texts, verdicts) if v is None for t in ts]
        backs = iter(_translate_unique(back, [o for t in survivors for o in t.outputs]))
        for t in survivors:
            t.back = [next(backs) for _ in t.outputs]
        verdicts = [v or _first_failure(ts, filters, sentinel, REASONS[-1:]) for ts, v in zip(texts, verdicts)]
    return [_result(it, ts, v, filters, sentinel) for it, ts, v in zip(items, texts, verdicts)]


def _first_failure(texts: list[Text], f: DataTranslateConfig, sentinel: Sentinel, reasons: tuple[str, ...]) -> tuple | None:
    for reason in reasons:
        for t in texts:
            detail = _check(reason, t, f, sentinel)
            if detail is not None:
                return reason, f"{'.'.join(map(str, t.address))}: {detail}"
    return None


def _result(item: Item, texts: list[Text], verdict: tuple | None, f: DataTranslateConfig, sentinel: Sentinel) -> dict:
    translated = copy.deepcopy(item.record)
    for t in texts:  # a broken text shows what came back, sentinels and all
        raw = "".join(_outs(t))
        _set(translated, t.address, t.restored if t.restored is not None else raw)
    chrf = [round(round_trip_chrf(t, sentinel), 2) for t in texts if t.back]
    return {"id": item.id, "status": "rejected" if verdict else "kept", "reason": verdict and verdict[0],
            "detail": verdict and verdict[1], "record": translated,
            "round_trip_chrf": min(chrf) if chrf and len(chrf) == len(texts) else None}  # fmt: skip


def _outs(t: Text) -> list[str]:
    """One entry per piece: the kept text, or the next segment's raw output."""
    outs = iter(t.outputs)
    return [p if isinstance(p, str) else next(outs) for p in t.masked.pieces]


# -------------------------------------------------------------------------------------- the stage


def item_id(record: dict[str, Any], identity: dict[str, Any]) -> str:
    """sha256 of the item (its own ``id`` left out: the same item twice is a duplicate), the translators and
    the prompt (16 hex digits)."""
    content = {k: v for k, v in record.items() if k not in ("id", "source_id")}
    text = json.dumps({"item": content, **identity}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_progress(folder: Path) -> dict[str, dict[str, Any]]:
    """The results of earlier attempts by id; a line cut short by a kill is skipped."""
    done: dict[str, dict[str, Any]] = {}
    for part in sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else []:
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict) and "id" in result:
                done[result["id"]] = result
    return done


def append_batch(part: Path, results: list[dict[str, Any]]) -> None:
    """One write, flush and fsync per batch: a kill leaves whole lines and at most one cut line."""
    with open(part, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        fh.flush()
        os.fsync(fh.fileno())


def _shots(cfg: DataTranslateConfig) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The seeded few-shot examples of both directions (eval translate's choice), from the pairs' train / dev
    split where there is one. (Shots of at most 200 characters, or a shot showing a sentinel copied
    through, made the demo model break more placeholders: bench/RESULTS.md.)"""
    if not cfg.pairs:
        raise UserError("a causal translator with --prompt few-shot needs --pairs (a parallel file for the shots)")
    pairs = [{**p, cfg.src: one_line(p[cfg.src]), cfg.tgt: one_line(p[cfg.tgt])}
             for p in read_pairs(cfg.pairs, cfg.src, cfg.tgt, None)]  # fmt: skip
    if any("split" in p for p in pairs):
        pairs = [p for p in pairs if p.get("split") in SHOT_SPLITS] or pairs
    out = {}
    for s, t in ((cfg.src, cfg.tgt), (cfg.tgt, cfg.src)):
        try:
            chosen = [(p[s], p[t]) for p in choose_shots(pairs, [], s, t, cfg.shots, cfg.seed)]
        except UserError as exc:
            raise UserError(str(exc), cfg.pairs) from exc
        out[(s, t)] = chosen
    return out


def output_names(paths: list[Path]) -> list[str]:
    """``translated/`` file names: each input's name as .jsonl, numbered when two would collide."""
    stems = [p.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json") for p in paths]
    if len(set(stems)) < len(stems):
        stems = [f"{i:03d}-{s}" for i, s in enumerate(stems)]
    return [f"{s}.jsonl" for s in stems]


def data_translate(cfg: DataTranslateConfig, work: Path) -> dict[str, Any]:
    """Stage entry (``data translate``): see the module doc."""
    if not cfg.input:
        raise UserError("data translate needs input files (--input)")
    if not cfg.tgt:
        raise UserError("data translate needs --tgt (the language to translate into)")
    if not cfg.translator:
        raise UserError("data translate needs a translator model folder (--translator)")
    paths = expand_paths(cfg.input)
    items = read_items(paths, cfg.kind, cfg.max_items)
    if not items:
        raise UserError("holds no items", paths[0])

    scripts_for(cfg.tgt)  # an unknown language code fails now
    folders = [resolve_model(cfg.translator)]
    if cfg.round_trip and cfg.back_translator:
        folders.append(resolve_model(cfg.back_translator))
    kinds = [M.translator_kind(f, cfg.translator_kind) for f in folders]
    needs_shots = cfg.prompt == "few-shot" and "causal" in kinds
    shots = _shots(cfg) if needs_shots else {}
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.bf16, device)
    forward = M.load_translator(folders[0], cfg, shots, device, bf16)
    backward = M.load_translator(folders[1], cfg, shots, device, bf16) if len(folders) > 1 else forward
    sentinel = M.sentinel_of(forward, backward) if cfg.round_trip else forward.sentinel
    prompt = {"version": M.PROMPT_VERSION, "src": cfg.src, "tgt": cfg.tgt, "forward": forward.describe(),
              "back": backward.describe() if cfg.round_trip else None, "sentinel": sentinel.make(1), "bf16": bf16,
              "max_new_tokens": [cfg.max_new_tokens_factor, cfg.max_new_tokens_extra]}  # fmt: skip
    identity = {"translators": [M.fingerprint(f) for f in folders], "prompt": prompt}
    for item in items:
        item.id = item_id(item.record, identity)
    first: dict[str, Item] = {}
    for item in items:
        first.setdefault(item.id, item)
    progress = work / PROGRESS
    done = read_progress(progress)
    pending = [it for it in first.values() if it.id not in done]
    if pending:
        progress.mkdir(exist_ok=True)
        part = progress / f"part-{len(list(progress.glob('part-*.jsonl'))):04d}.jsonl"
        forward.load()
        backward.load()
        for b in range(0, len(pending), cfg.batch_size):
            batch = pending[b : b + cfg.batch_size]
            started = time.perf_counter()
            results = translate_items(batch, lambda t: forward(t, cfg.src, cfg.tgt),
                                      (lambda t: backward(t, cfg.tgt, cfg.src)) if cfg.round_trip else None,
                                      cfg, sentinel)  # fmt: skip
            seconds = (time.perf_counter() - started) / len(batch)
            results = [{**r, "seconds": round(seconds, 4)} for r in results]
            append_batch(part, results)
            done.update((r["id"], r) for r in results)
            print(f"[data_translate] {len(done)}/{len(first)} items ({seconds * len(batch):.1f} s a batch)",
                  file=sys.stderr, flush=True)  # fmt: skip
    summary = write_outputs(work, items, first, done, paths)
    shutil.rmtree(progress, ignore_errors=True)
    summary.update({"translator": {**identity["translators"][0], **forward.describe()},
                    "back_translator": identity["translators"][-1] if cfg.round_trip else None,
                    "prompt_version": M.PROMPT_VERSION,
                    "prompt_sha256": hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16],
                    "sentinel": sentinel.make(1), "device": str(device), "bf16": bf16,
                    "inputs": {str(p): file_sha256(p)[:16] for p in paths}})  # fmt: skip
    write_json_atomic(work / SUMMARY, summary)
    return {k: summary[k] for k in ("items", "kept", "dropped", "items_per_second")}


def write_outputs(work: Path, items: list[Item], first: dict[str, Item], done: dict[str, dict],
                  paths: list[Path]) -> dict[str, Any]:  # fmt: skip
    """translated/*.jsonl and rejects.jsonl in input order; the counts."""
    out_dir = work / TRANSLATED
    out_dir.mkdir(exist_ok=True)
    names = output_names(paths)
    dropped = dict.fromkeys(REASONS, 0)
    kept: list[list[dict[str, Any]]] = [[] for _ in names]
    rejects, chrf = [], []
    for item in items:
        result = done[item.id]
        reason = "duplicate" if first[item.id] is not item else result["reason"]
        head = {"id": item.id, "source_id": item.source_id}
        if reason is None:
            kept[item.file].append({**head, **{k: v for k, v in result["record"].items() if k not in head}})
            chrf += [result["round_trip_chrf"]] if result["round_trip_chrf"] is not None else []
        else:
            dropped[reason] += 1
            detail = f"same item as {first[item.id].source_id}" if reason == "duplicate" else result["detail"]
            rejects.append({**head, "file": str(paths[item.file]), "line": item.line, "reason": reason,
                            "detail": detail, "round_trip_chrf": result["round_trip_chrf"], "item": item.record,
                            "translation": result["record"]})  # fmt: skip
    for name, records in zip(names, kept):
        write_jsonl_atomic(out_dir / name, records)
    write_jsonl_atomic(work / REJECTS, rejects)
    seconds = sum(done[i]["seconds"] for i in first)
    return {"items": len(items), "kept": sum(map(len, kept)), "dropped": dropped, "translated_items": len(first),
            "translate_seconds": round(seconds, 2),
            "items_per_second": round(len(first) / seconds, 3) if seconds else None,
            "round_trip_chrf_mean_kept": round(sum(chrf) / len(chrf), 2) if chrf else None,
            "outputs": {str(p): f"{TRANSLATED}/{n}" for p, n in zip(paths, names)}}  # fmt: skip


def print_data_translate(record: dict[str, Any], out: Path) -> None:
    """What ``data translate`` prints: kept, every drop reason, speed."""
    summary = json.loads((Path(out) / SUMMARY).read_text(encoding="utf-8"))
    drops = ", ".join(f"{r} {n}" for r, n in summary["dropped"].items() if n) or "none"
    print(f"{out}: kept {summary['kept']} of {summary['items']} items; dropped: {drops}; "
          f"{summary['items_per_second']} items/s -> {out}/{TRANSLATED}/, {REJECTS}")  # fmt: skip
