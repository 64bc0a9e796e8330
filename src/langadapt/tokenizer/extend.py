"""``langadapt tokenizer extend``: continue the base tokenizer's BPE on target text (SambaLingo, DictaLM).

The target corpus is split into units exactly as the base tokenizer splits text (its normalizer and
pre-tokenizer), each distinct unit is tokenized with the base model, and new merges are learned on top of
those token sequences (:mod:`langadapt.tokenizer.merges`). New tokens get ids after every existing id
(special tokens included) and new merges rank after the base's, so the base's ids and its merges are
untouched. ``tokenizer.json`` is edited directly: ``add_tokens`` would bypass BPE, break spacing and make
encoding slow.

Byte fallback (Llama-2 / Mistral style): ``<0xNN>`` tokens are never merged, since a merged token such as
``<0xC3><0xA1>`` would not decode as bytes. Instead, a character that the base vocabulary lacks (so the
base spells it as byte tokens) and that occurs at least ``min_frequency`` times becomes a new
single-character token first; BPE looks characters up in the vocabulary before falling back to bytes, so
words holding it can then be merged. Characters that occur in the English corpus are not added, since
that would change English tokenization.

With an English corpus, every merge whose pair occurs in the base tokenization of that corpus is
skipped, so the corpus tokenizes exactly as before (new merges rank last, so they only act where the
base tokenization leaves such a pair). Unseen English may still change: ``english_heldout`` counts it.

Counting the corpora's units, most of the time on a large corpus, runs in ``workers`` processes
(:func:`langadapt.tokenizer.base.count_units`); the extension is byte-identical for any number. The rest is
serial: tokenizing each distinct unit, the merge loop (both grow with distinct units, not with the text),
and the before/after report and verification on fixed samples.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.config import ExtendConfig
from langadapt.corpus.readers import check_corpus, iter_documents
from langadapt.models import load_fast_tokenizer
from langadapt.runs import EXTENSION_JSON, read_json, write_json_atomic, write_text_atomic
from langadapt.tokenizer.base import (
    COPIED_FILES,
    STALE_FILES,
    BaseTokenizer,
    count_units,
    load_base,
    merge_pairs,
)
from langadapt.tokenizer.merges import LearnedMerge, learn_merges
from langadapt.tokenizer.metrics import fertility_of_each
from langadapt.tokenizer.spm import (
    NewPieceFilter,
    base_model,
    check_agreement,
    english_concatenations,
    piece_rules,
    sentencepiece_merges,
    write_model,
)
from langadapt.tokenizer.verify import verify_extension

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)
# Fertility of the training corpora in extension.json uses at most this many documents each: an
# in-sample report figure, not worth encoding a 10 GB corpus twice (held-out corpora are measured whole).
REPORT_MAX_DOCS = 1000
# Target documents on which the base's tokenizer.model must agree with its tokenizer.json.
SPM_CHECK_DOCS = 200


@dataclass
class Extension:
    """New tokens and merges learned for a base; any prefix of them is a valid smaller extension."""

    base: BaseTokenizer
    char_tokens: list[str]
    """Characters missing from the base vocabulary, added as tokens first (ids right after the base)."""
    merges: list[LearnedMerge]
    """Learned merges in rank order."""
    english_pairs: int
    """Token pairs of the English reference that new merges had to avoid."""

    @property
    def added(self) -> int:
        return len(self.char_tokens) + sum(m.new for m in self.merges)

    def new_tokens(self, size: int | None = None) -> list[str]:
        """Vocabulary strings of the first ``size`` new tokens, in id order."""
        tokens = self.char_tokens + [m.text for m in self.merges if m.new]
        return tokens[:size]

    def _merges_for(self, size: int | None) -> list[LearnedMerge]:
        remaining = (self.added if size is None else size) - len(self.char_tokens)
        kept, made = [], 0
        for m in self.merges:
            if made >= remaining:
                break
            kept.append(m)
            made += m.new
        return kept

    def tokenizer_json(self, size: int | None = None) -> dict[str, Any]:
        """The base's tokenizer.json with the first ``size`` new tokens (all by default) appended."""
        base = self.base
        model = dict(base.data["model"])
        vocab = dict(model["vocab"])
        # Added tokens that sit after the model vocabulary (Llama-3's 256 specials, Qwen's 26) go into it
        # at their own ids: `tokenizers` gives an added token missing from the model the id len(vocab),
        # so the new tokens would otherwise push every one of them up and decode as special tokens.
        vocab.update(base.added_outside_vocab)
        for i, token in enumerate(self.new_tokens(size)):
            vocab[token] = base.first_new_id + i
        strings = {**base.strings, **{i: s for s, i in vocab.items() if i >= base.first_new_id}}
        merges = merge_pairs(model)
        proto = base_model(base)  # with a tokenizer.model: every split of every new piece, as SentencePiece
        if proto is not None:
            merges += sentencepiece_merges(vocab, base.first_new_id, proto)
        else:
            merges += [[strings[m.left], strings[m.right]] for m in self._merges_for(size)]
        model.update(vocab=vocab, merges=merges)
        return {**base.data, "model": model}

    def tokenizer(self, size: int | None = None) -> Tokenizer:
        from tokenizers import Tokenizer

        return Tokenizer.from_str(json.dumps(self.tokenizer_json(size)))


def plan_extension(
    base: BaseTokenizer,
    texts: Iterable[str],
    *,
    num_new_tokens: int,
    min_frequency: int = 2,
    english_texts: Iterable[str] | None = None,
    workers: int = 1,
) -> Extension:
    """Learn up to ``num_new_tokens`` new tokens for ``base`` from ``texts`` (continued BPE), counting the
    units of the corpora in ``workers`` processes (the result does not depend on it)."""
    target = count_units(base, texts, workers)
    english = count_units(base, english_texts, workers) if english_texts is not None else Counter()
    chars = _missing_chars(base, target, english, min_frequency)[:num_new_tokens]
    model = _with_chars(base, chars).model
    strings = {**base.strings, **{base.first_new_id + i: c for i, c in enumerate(chars)}}
    words = [[t.id for t in model.tokenize(u)] for u in target]
    english_pairs = {p for u in english for p in _pairs(model.tokenize(u))}
    reserved = set(base.reserved_strings)
    if base.ignore_merges:  # such a model takes a whole unit found in the vocab as is, merges or not
        reserved |= set(english)
    proto = base_model(base)  # new pieces follow the base's piece rules; with all splits merged, none may
    if proto is not None:  # equal two adjacent English tokens (langadapt.tokenizer.spm)
        reserved |= english_concatenations(english_pairs, strings)
    reserved = NewPieceFilter(reserved, piece_rules(base, proto))
    merges = learn_merges(
        words, list(target.values()), strings, next_id=base.first_new_id + len(chars),
        num_new_tokens=num_new_tokens - len(chars), min_frequency=min_frequency,
        barrier_ids=base.barrier_ids, forbidden_pairs=english_pairs | base.merge_pairs,
        reserved_strings=reserved,
    )  # fmt: skip
    return Extension(base, chars, merges, len(english_pairs))


def _pairs(tokens) -> list[tuple[int, int]]:
    ids = [t.id for t in tokens]
    return list(itertools.pairwise(ids))


def _missing_chars(base: BaseTokenizer, target: Counter, english: Counter, min_frequency: int) -> list[str]:
    """Frequent target characters the vocabulary lacks (never the case for byte-level tokenizers)."""
    missing: Counter[str] = Counter()
    for unit, n in target.items():
        for ch in unit:
            if ch not in base.vocab:
                missing[ch] += n
    english_chars = {ch for unit in english for ch in unit}
    ok = [c for c, n in missing.items() if n >= min_frequency and c not in english_chars
          and c not in base.reserved_strings]  # fmt: skip
    return sorted(ok, key=lambda c: (-missing[c], c))


def _with_chars(base: BaseTokenizer, chars: list[str]) -> Tokenizer:
    if not chars:
        return base.tokenizer()
    ext = Extension(base, chars, [], 0)
    return ext.tokenizer()


# ------------------------------------------------------------------------------------------ the stage


def extend(cfg: ExtendConfig, out: Path) -> dict[str, Any]:
    """Stage entry: extend ``cfg.base``'s tokenizer into the tokenizer folder ``out``; return the figures."""
    out = Path(out)
    start = time.perf_counter()
    base = load_base(cfg.base)
    paths = _corpora(cfg)
    if base_model(base) is not None:  # a stale base tokenizer.model is bad input, not our bug: fail early
        check_agreement(base.folder, iter_documents(paths["target"], cfg.text_field, SPM_CHECK_DOCS))
    english = iter_documents(paths["english"], cfg.text_field) if paths["english"] else None
    ext = plan_extension(base, iter_documents(paths["target"], cfg.text_field, cfg.max_docs),
                         num_new_tokens=cfg.num_new_tokens, min_frequency=cfg.min_frequency,
                         english_texts=english, workers=cfg.workers)  # fmt: skip
    if ext.added < cfg.num_new_tokens:
        log.warning("only %d of %d new tokens occur at least %d times in the corpus", ext.added,
                    cfg.num_new_tokens, cfg.min_frequency)  # fmt: skip
    # one tokenizer.json, serialised and parsed once: a 262k vocabulary takes seconds each time
    tokenizer_json = ext.tokenizer_json()
    dropped = save_tokenizer_folder(base, tokenizer_json, out)
    new = load_fast_tokenizer(out)
    record = {**_describe(cfg, base, ext, paths, new), "dropped_files": dropped}
    record["verification"] = verify_own_output(cfg, base, out, paths, (new, tokenizer_json))
    record["seconds"] = round(time.perf_counter() - start, 3)
    write_json_atomic(out / EXTENSION_JSON, record)
    return {"added": ext.added, "new_vocab_size": record["new_vocab_size"], "fertility": record["fertility"],
            "english_heldout_changed": record["english_heldout_changed"]}  # fmt: skip


def _corpora(cfg: ExtendConfig) -> dict[str, list[Path]]:
    """The checked corpus files of each role (optional roles may be empty), failing early on bad ones."""
    given = {"target": cfg.corpus, "target_heldout": cfg.target_heldout, "english": cfg.english_corpus,
             "english_heldout": cfg.english_heldout}  # fmt: skip
    return {role: check_corpus(files, cfg.text_field) if files or role == "target" else []
            for role, files in given.items()}  # fmt: skip


def _describe(cfg: ExtendConfig, base: BaseTokenizer, ext: Extension, paths: dict[str, list[Path]],
              new: Tokenizer) -> dict:  # fmt: skip
    """extension.json without timings: sizes, the new tokens, fertility before and after per corpus."""
    old = base.tokenizer()
    fert = {}
    for role, files in paths.items():
        if not files:
            continue
        limit = None if role.endswith("heldout") else REPORT_MAX_DOCS
        if role == "target" and cfg.max_docs:
            limit = min(cfg.max_docs, REPORT_MAX_DOCS)
        before, after = fertility_of_each([old, new], iter_documents(files, cfg.text_field, limit))
        fert[role] = {"before": before, "after": after}
    heldout = paths["english_heldout"]
    changed = changed_docs(old, new, iter_documents(heldout, cfg.text_field)) if heldout else None
    return {
        "base": str(cfg.base),
        "style": base.style,
        "base_vocab_size": old.get_vocab_size(with_added_tokens=True),
        "requested": cfg.num_new_tokens,
        "added": ext.added,
        "new_vocab_size": new.get_vocab_size(with_added_tokens=True),
        "first_new_id": base.first_new_id,
        "new_merges": len(ext.merges),
        "char_tokens": len(ext.char_tokens),
        "english_reference_pairs": ext.english_pairs,
        "english_heldout_changed": changed,
        "fertility": fert,
        "added_tokens": [token_text(base, t) for t in ext.new_tokens()],
    }


def verify_own_output(cfg: ExtendConfig, base: BaseTokenizer, out: Path, paths: dict[str, list[Path]],
                      new: tuple[Tokenizer, dict]) -> dict:  # fmt: skip
    """``tokenizer verify`` on the folder just written (held-out text where given, else a sample of the
    training text). A broken id layout, round-trip, merge chain or tokenizer.model is a bug: it stops the
    stage before the folder is committed. Held-out English that changes is reported, not fatal."""
    def sample(heldout: str, train: str) -> list[str]:
        files, limit = (paths[heldout], None) if paths[heldout] else (paths[train], REPORT_MAX_DOCS)
        return list(iter_documents(files, cfg.text_field, limit)) if files else []

    result = verify_extension(base.folder, out, texts=sample("target_heldout", "target"),
                              english=sample("english_heldout", "english"), max_english_changed=1.0,
                              loaded=(base.tokenizer(), base.data, *new))  # fmt: skip
    if not result.ok:
        raise RuntimeError("the extended tokenizer failed its own verification (a langadapt bug; please "
                           "report it): " + "; ".join(result.failures))  # fmt: skip
    return result.as_dict()


def save_tokenizer_folder(base: BaseTokenizer, tokenizer_json: dict[str, Any], out: Path) -> list[str]:
    """Write tokenizer.json and copy the base's special-token and chat-template files; return dropped ones."""
    # no indent: json's C encoder (indent falls back to the Python one, seconds for a 262k vocabulary)
    write_text_atomic(out / "tokenizer.json", json.dumps(tokenizer_json, ensure_ascii=False))
    for name in COPIED_FILES:
        if (base.folder / name).is_file():
            shutil.copy2(base.folder / name, out / name)
    if (base.folder / "additional_chat_templates").is_dir():
        shutil.copytree(base.folder / "additional_chat_templates", out / "additional_chat_templates")
    written = {"tokenizer.model"} if write_model(base, tokenizer_json, out / "tokenizer.model") else set()
    dropped = [name for name in STALE_FILES if (base.folder / name).exists() and name not in written]
    for name in dropped:
        log.warning("%s is not copied: it holds the base vocabulary only; tokenizer.json is the extended "
                    "tokenizer", base.folder / name)  # fmt: skip
    return dropped


def changed_docs(old, new, texts: Iterable[str], batch_size: int = 256) -> dict[str, int]:
    """How many documents the two tokenizers encode to different ids."""
    changed = total = 0
    it = iter(texts)
    while batch := list(itertools.islice(it, batch_size)):
        a = old.encode_batch_fast(batch, add_special_tokens=False)
        b = new.encode_batch_fast(batch, add_special_tokens=False)
        changed += sum(x.ids != y.ids for x, y in zip(a, b))
        total += len(batch)
    return {"changed": changed, "docs": total}


def token_text(base: BaseTokenizer, token: str) -> str:
    """A vocabulary string as text (byte-level tokens may end inside a character: shown as U+FFFD)."""
    if base.style == "byte-level":
        from tokenizers import decoders

        return decoders.ByteLevel().decode([token])
    return token.replace(base.replacement or "▁", " ")


def print_extension(stage_record: dict[str, Any], out: Path) -> None:
    """What ``tokenizer extend`` prints: sizes, fertility before and after (from ``out/extension.json``)."""
    record = read_json(Path(out) / EXTENSION_JSON)
    print(f"{out}: {record['base_vocab_size']} -> {record['new_vocab_size']} tokens "
          f"(+{record['added']}, {record['style']}) in {record['seconds']:.1f} s")  # fmt: skip
    for name, fa in record["fertility"].items():
        b, a = fa["before"]["tokens_per_word"], fa["after"]["tokens_per_word"]
        change = f"{(a - b) / b:+.1%}" if b else "n/a"
        print(f"  {name:<16} tokens/word {b:.3f} -> {a:.3f} ({change})")
    held = record.get("english_heldout_changed")
    if held:
        print(f"  held-out English documents tokenized differently: {held['changed']} of {held['docs']}")
    for name in record.get("dropped_files", []):
        print(f"  note: {name} of the base was not copied (it would describe the old vocabulary)")
