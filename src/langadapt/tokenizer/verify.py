"""``langadapt tokenizer verify``: check that an extended tokenizer really extends its base.

What an extension promises (docs/stages.md, ARCHITECTURE.md "Ids are stable"), each checked here:

* **ids**: every base token, added and special tokens included, keeps its id and its special flag;
  new tokens take the ids right after all of them, contiguously.
* **round-trip**: ``decode(encode(text)) == text`` for every given text the base round-trips.
* **English**: the English texts encode to the same ids as under the base (at most
  ``max_english_changed`` of the documents may differ: held-out text can hold pairs the reference lacked).
* **reachable**: every new token is what the BPE model makes of its own string, merges only (a token
  no merge chain reaches would never be produced and its embedding would never train).
* **tokenizer.model**: where the extended folder has one, SentencePiece encodes the texts to the same
  ids as ``tokenizer.json`` (:mod:`langadapt.tokenizer.spm`).

``tokenizer extend`` runs the same checks on its own output before it commits the folder.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import reading
from langadapt.tokenizer.spm import sentencepiece_mismatches

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_FILE = "tokenizer.model"
#: Failures listed per check before the rest are only counted.
MAX_EXAMPLES = 5


@dataclass
class Verification:
    """The outcome of :func:`verify_extension`: failures (one line each) and what was checked."""

    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failures": self.failures, **self.figures}


def load_raw(folder: Path) -> tuple[Tokenizer, dict[str, Any]]:
    """The ``tokenizers.Tokenizer`` of a folder and its parsed tokenizer.json."""
    from tokenizers import Tokenizer

    path = Path(folder) / "tokenizer.json"
    with reading(path, "cannot load tokenizer.json"):
        text = path.read_text(encoding="utf-8")
        return Tokenizer.from_str(text), json.loads(text)


def check_ids(base: Tokenizer, base_data: dict, ext: Tokenizer, ext_data: dict) -> tuple[list[str], int]:
    """Failures of the id contract, and the number of new tokens."""
    failures = []
    base_vocab, ext_vocab = base.get_vocab(with_added_tokens=True), ext.get_vocab(with_added_tokens=True)
    moved = sorted((i, t, ext_vocab.get(t)) for t, i in base_vocab.items() if ext_vocab.get(t) != i)
    for old, token, new in moved[:MAX_EXAMPLES]:
        failures.append(f"base token {token!r} (id {old}) " + ("is missing" if new is None else f"has id {new}"))
    if len(moved) > MAX_EXAMPLES:
        failures.append(f"... {len(moved) - MAX_EXAMPLES} more base tokens moved")
    special = {t["content"]: t["special"] for t in ext_data.get("added_tokens") or []}
    for t in base_data.get("added_tokens") or []:
        if special.get(t["content"]) != t["special"]:
            failures.append(f"added token {t['content']!r} lost its special={t['special']} flag")
    first_new = 1 + max(base_vocab.values())
    new_ids = sorted(i for t, i in ext_vocab.items() if t not in base_vocab)
    if new_ids != list(range(first_new, first_new + len(new_ids))):
        failures.append(f"new token ids are not contiguous from {first_new} (first {new_ids[:3]})")
    added_new = [t["content"] for t in ext_data.get("added_tokens") or [] if t["content"] not in base_vocab]
    if added_new:
        failures.append(f"new token {added_new[0]!r} is an added token, not a BPE token")
    return failures, len(new_ids)


def unreachable_tokens(ext: Tokenizer, ext_data: dict, new_ids: Iterable[int]) -> list[tuple[int, str, list[int]]]:
    """New tokens the BPE merges do not build from their own string: (id, token, what they build)."""
    from tokenizers import Tokenizer

    model = ext.model
    if ext_data["model"].get("ignore_merges"):  # merges only: a vocabulary hit would prove nothing
        data = {**ext_data, "model": {**ext_data["model"], "ignore_merges": False}, "added_tokens": []}
        model = Tokenizer.from_str(json.dumps(data)).model
    strings = {i: s for s, i in ext_data["model"]["vocab"].items()}
    bad = []
    for i in new_ids:
        got = [t.id for t in model.tokenize(strings[i])]
        if got != [i]:
            bad.append((i, strings[i], got))
    return bad


def compare_texts(base: Tokenizer, ext: Tokenizer, texts: Iterable[str], *,
                  batch_size: int = 128) -> dict[str, Any]:  # fmt: skip
    """Round-trips and id changes of ``texts``: counts, and a few examples of each failure."""
    out: dict[str, Any] = {"docs": 0, "changed": 0, "roundtrip_failed": 0, "base_roundtrip_failed": 0,
                           "changed_examples": [], "roundtrip_examples": []}  # fmt: skip
    it = iter(texts)
    while batch := list(itertools.islice(it, batch_size)):
        a = [e.ids for e in base.encode_batch_fast(batch, add_special_tokens=False)]
        b = [e.ids for e in ext.encode_batch_fast(batch, add_special_tokens=False)]
        da = base.decode_batch(a, skip_special_tokens=False)
        db = ext.decode_batch(b, skip_special_tokens=False)
        for text, ia, ib, ta, tb in zip(batch, a, b, da, db):
            out["docs"] += 1
            if ia != ib:
                out["changed"] += 1
                if len(out["changed_examples"]) < MAX_EXAMPLES:
                    out["changed_examples"].append(_snippet(text))
            if ta != text:
                out["base_roundtrip_failed"] += 1
            elif tb != text:
                out["roundtrip_failed"] += 1
                if len(out["roundtrip_examples"]) < MAX_EXAMPLES:
                    out["roundtrip_examples"].append(f"{_snippet(text)} decodes as {_snippet(tb)}")
    return out


def _snippet(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def verify_extension(base_folder: Path, ext_folder: Path, *, texts: Iterable[str] = (),
                     english: Iterable[str] = (), max_english_changed: float = 0.005,
                     loaded: tuple[Tokenizer, dict, Tokenizer, dict] | None = None) -> Verification:  # fmt: skip
    """Run every check of an extension ``ext_folder`` of ``base_folder`` (see the module docstring).

    ``loaded``: both tokenizers and their parsed tokenizer.json, when the caller has them already (a
    262k vocabulary takes seconds to parse)."""
    v = Verification()
    base, base_data, ext, ext_data = loaded or (*load_raw(base_folder), *load_raw(ext_folder))
    id_failures, n_new = check_ids(base, base_data, ext, ext_data)
    v.failures += id_failures
    first_new = ext.get_vocab_size(with_added_tokens=True) - n_new
    bad = unreachable_tokens(ext, ext_data, range(first_new, first_new + n_new)) if not id_failures else []
    for i, token, got in bad[:MAX_EXAMPLES]:
        v.failures.append(f"new token {token!r} (id {i}) is not reachable: its string encodes as {got}")
    if len(bad) > MAX_EXAMPLES:
        v.failures.append(f"... {len(bad) - MAX_EXAMPLES} more new tokens not reachable")
    v.figures.update(new_tokens=n_new, unreachable=len(bad))
    texts, english = list(texts), list(english)
    for role, docs in (("target", texts), ("english", english)):
        if not docs:
            continue
        got = compare_texts(base, ext, docs)
        v.figures[role] = {k: got[k] for k in ("docs", "changed", "roundtrip_failed", "base_roundtrip_failed")}
        for example in got["roundtrip_examples"]:
            v.failures.append(f"{role} text does not round-trip: {example}")
        if role == "english" and got["changed"] > max_english_changed * got["docs"]:
            v.failures.append(f"{got['changed']} of {got['docs']} English documents tokenize differently "
                              f"(allowed: {max_english_changed:.1%}), e.g. {got['changed_examples'][0]}")  # fmt: skip
    if (Path(ext_folder) / MODEL_FILE).is_file():

        mismatches = sentencepiece_mismatches(Path(ext_folder), texts + english)
        v.figures["tokenizer_model_mismatches"] = len(mismatches)
        v.failures += [f"{MODEL_FILE} disagrees with tokenizer.json: {m}" for m in mismatches[:MAX_EXAMPLES]]
    return v


def print_verification(v: Verification, json_out: bool = False) -> None:
    if json_out:
        print(json.dumps(v.as_dict(), ensure_ascii=False, indent=2))
        return
    for line in v.failures:
        print(f"FAIL {line}")
    summary = ", ".join(f"{role}: {f['docs']} docs, {f['changed']} changed, {f['roundtrip_failed']} not "
                        f"round-tripping" for role, f in v.figures.items() if isinstance(f, dict))  # fmt: skip
    print(f"{'ok' if v.ok else 'FAILED'}: {v.figures.get('new_tokens', 0)} new tokens"
          + (f"; {summary}" if summary else ""))  # fmt: skip
