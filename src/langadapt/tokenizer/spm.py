"""The SentencePiece side of extending a SentencePiece-style base (Llama-2, Mistral v1/v3, Gemma).

Such a base often ships ``tokenizer.model`` (a SentencePiece BPE ``ModelProto``) next to ``tokenizer.json``;
llama.cpp's converter and every ``use_fast=False`` user read the former. :func:`write_model` appends the new
tokens to it as pieces with the ids they have in ``tokenizer.json``.

The two formats merge differently. SentencePiece BPE repeatedly merges the adjacent pair whose
concatenation is a vocabulary piece with the highest score (whatever split of that piece the pair is),
while ``tokenizers`` BPE applies only the listed merges, by rank. transformers' converter therefore lists,
for every piece, all its (left, right) splits with both halves in the vocabulary, ordered by piece score.
An extension that appended only the merge it learned per new piece would disagree with SentencePiece
wherever the base leaves another split of a new piece next to each other, so for a base with
``tokenizer.model``:

* new pieces score below every base piece, decreasing in id order (SentencePiece then tries them after
  all base merges, in the order ``tokenizer.json`` ranks them);
* ``tokenizer.json`` gets :func:`sentencepiece_merges`: every split of every new piece, and the splits of
  base pieces that a new piece makes possible (``▁hel`` + ``lo`` for a base ``▁hello``), SpmConverter-ordered;
* a new piece must not be the concatenation of two adjacent tokens of the English reference (one of its
  splits would then fire on English), see :class:`NewPieceFilter`;
* a new piece must be one SentencePiece's own trainer could have made (``IsValidSentencePiece``: one
  Unicode script, digits alone when ``split_digits``, ``▁`` only in front, at most
  ``max_sentencepiece_length`` characters). Without this rule the learner makes pieces such as ``et,`` or
  ``-m`` (frequent in Hungarian, never adjacent in the English reference); they then fire on held-out
  English (``intranet,``, ``x-msdownload``), which a byte-level base's pre-tokenizer never allows.
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError, reading

if TYPE_CHECKING:
    from langadapt.tokenizer.base import BaseTokenizer

MODEL_FILE = "tokenizer.model"
#: Share of a base's tokens that may break SentencePiece's piece rules while the rules still apply.
RULE_EXCEPTIONS = 0.03
WS = "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Characters SentencePiece's trainer never puts into a piece: unk surface, NUL, the UPP boundary, space.
_NEVER_IN_PIECE = frozenset("\u2047\x00\u2585 ")


def _pb2():
    with reading(MODEL_FILE, "cannot import sentencepiece's protobuf module (pip install sentencepiece "
                 "protobuf)", (ImportError,)):  # fmt: skip
        from sentencepiece import sentencepiece_model_pb2

    return sentencepiece_model_pb2


def read_model(path: str | Path) -> Any:
    """Parse a SentencePiece ``ModelProto`` (a UserError naming the file when it is not one)."""
    proto = _pb2().ModelProto()
    with reading(path, "cannot read the SentencePiece model"):
        proto.ParseFromString(Path(path).read_bytes())
    if not proto.pieces:
        raise UserError("not a SentencePiece model (no pieces)", path)
    return proto


def base_model(base: BaseTokenizer) -> Any | None:
    """The base's ``tokenizer.model`` when it has one that the extension can extend, else None.

    A model that is not BPE or whose pieces do not line up with ``tokenizer.json``'s ids is a UserError:
    extending it would write a ``tokenizer.model`` that silently disagrees.
    """
    path = base.folder / MODEL_FILE
    if base.style != "metaspace" or not path.is_file():
        return None
    proto = read_model(path)
    check_layout(proto, base, path)
    return proto


def check_layout(proto: Any, base: BaseTokenizer, path: Path) -> None:
    """Piece ``i`` of the model must be token ``i`` of ``tokenizer.json``, and nothing may follow."""
    if proto.trainer_spec.model_type != 2:  # BPE
        raise UserError("tokenizer.model is not a SentencePiece BPE model, but tokenizer.json is BPE", path)
    n = len(proto.pieces)
    if n != base.first_new_id:
        raise UserError(f"{n} pieces, but tokenizer.json uses ids 0..{base.first_new_id - 1}: the two files "
                        f"describe different vocabularies (remove {MODEL_FILE} to extend tokenizer.json alone)",
                        path)  # fmt: skip
    for i, piece in enumerate(proto.pieces):
        if piece.type == NORMAL and base.strings.get(i) != piece.piece:
            raise UserError(f"piece {i} is {piece.piece!r} in tokenizer.model but "
                            f"{base.strings.get(i)!r} in tokenizer.json", path)  # fmt: skip


# ------------------------------------------------------------------------------ which pieces may be new


@lru_cache(maxsize=65536)
def _script(c: str) -> str:
    try:
        from fontTools import unicodedata as fu  # matplotlib's dependency; exact Unicode scripts

        s = fu.script(c)
    except ImportError:  # pragma: no cover - coarse fallback: the first word of the character name
        cat = unicodedata.category(c)
        s = unicodedata.name(c, "?").split(" ")[0] if cat[0] in "L" else ("Zinh" if cat[0] == "M" else "Zyyy")
    if s in ("Hira", "Kana", "HIRAGANA", "KATAKANA", "CJK") or c == "\u30fc":
        return "Hani"
    return s


def _is_number(c: str) -> bool:
    return "0" <= c <= "9" or "\uff10" <= c <= "\uff19"


def valid_piece(piece: str, spec: Any) -> bool:
    """SentencePiece's ``TrainerInterface::IsValidSentencePiece`` for a trainer spec."""
    if not piece or len(piece) > spec.max_sentencepiece_length:
        return False
    all_ws = all(c == WS for c in piece)
    prev: str | None = None
    last = len(piece) - 1
    for pos, c in enumerate(piece):
        if c in _NEVER_IN_PIECE:
            return False
        if c == WS:
            if not spec.allow_whitespace_only_pieces or not all_ws:
                split = spec.split_by_whitespace
                if spec.treat_whitespace_as_suffix:
                    if (split and pos < last) or (not split and pos < last and pos == 0):
                        return False
                elif (split and pos > 0) or (not split and pos > 0 and pos == last):
                    return False
            continue
        s: str | None = _script(c)
        if s == "Zinh":  # combining marks take the script before them
            s = prev
        if not spec.split_by_number and _is_number(c):
            s = None
        if spec.split_digits and _is_number(c) and len(piece) > 1:
            return False
        if spec.split_by_unicode_script and s is not None and prev is not None and prev != s:
            return False
        prev = s
    return True


def piece_rules(base: BaseTokenizer, proto: Any | None) -> Any | None:
    """The trainer spec new pieces must satisfy: the model's own, or (no tokenizer.model) SentencePiece's
    defaults when the base's tokens already satisfy them (all but ``RULE_EXCEPTIONS`` of them: filler and
    reserved pieces such as Phi-3's ``[PAD32011]`` or Gemma's ``<unused0>`` never came from the trainer);
    None when no rule applies (byte-level bases, Metaspace BPEs trained by ``tokenizers``, whose tokens
    mix scripts)."""
    if proto is not None:
        return proto.trainer_spec
    if base.style != "metaspace":
        return None
    spec = _pb2().TrainerSpec(allow_whitespace_only_pieces=True)
    normal = [s for s in base.vocab if s not in base.reserved_strings]
    spec.max_sentencepiece_length = max(map(len, normal), default=16)
    invalid = sum(not valid_piece(s, spec) for s in normal)
    return spec if invalid <= RULE_EXCEPTIONS * len(normal) else None


class NewPieceFilter(set):
    """The strings a new token must not take, as ``learn_merges``' ``reserved_strings`` (it only asks ``in``):
    the given set, concatenations of adjacent English reference tokens, and pieces the rules forbid."""

    def __init__(self, reserved: Iterable[str], spec: Any | None = None) -> None:
        super().__init__(reserved)
        self.spec = spec

    def __contains__(self, text: object) -> bool:
        if set.__contains__(self, text):
            return True
        return self.spec is not None and isinstance(text, str) and not valid_piece(text, self.spec)


def english_concatenations(pairs: Iterable[tuple[int, int]], strings: dict[int, str]) -> set[str]:
    """``left + right`` for every adjacent token pair of the English reference: with all splits of a new
    piece in the merges, a new piece equal to one of them would merge that English pair."""
    return {strings[a] + strings[b] for a, b in pairs}


# --------------------------------------------------------------------------- merges for tokenizer.json


def sentencepiece_merges(vocab: dict[str, int], first_new_id: int, proto: Any) -> list[list[str]]:
    """The merges to append to a SentencePiece-converted base's tokenizer.json so that it encodes like
    the SentencePiece model with the new tokens (ids >= ``first_new_id`` in ``vocab``) appended by
    :func:`write_model`: all splits of each new piece and the splits of base pieces that involve a new
    piece, ordered like transformers' SpmConverter (piece score, then longer left, longer right)."""
    strings = {i: s for s, i in vocab.items()}
    scores: dict[str, float] = {p.piece: p.score for p in proto.pieces if p.type == NORMAL}
    new = [strings[i] for i in sorted(i for i in strings if i >= first_new_id)]
    for k, token in enumerate(new):
        scores[token] = -float(k + 1)  # only the order matters here: below every base piece
    base_min = min((p.score for p in proto.pieces if p.type == NORMAL), default=0.0)
    new_set = set(new)
    ranked = []
    for piece, score in scores.items():
        is_new = piece in new_set
        key_score = base_min - 1 + score if is_new else score
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in scores and right in scores and (is_new or left in new_set or right in new_set):
                local.append((vocab[left], vocab[right], left, right))
        for _, _, left, right in sorted(local):
            ranked.append((key_score, len(left), len(right), left, right))
    # one stable sort, highest score first, as transformers' generate_merges
    ranked.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
    return [[left, right] for _, _, _, left, right in ranked]


# ---------------------------------------------------------------------------------- tokenizer.model


def new_scores(proto: Any, n: int) -> list[float]:
    """``n`` float32 scores strictly below every piece's and strictly decreasing (SentencePiece breaks
    ties by position, so equal scores would not follow the merge order)."""
    import numpy as np

    s = np.float32(min((p.score for p in proto.pieces), default=0.0))
    out = []
    for _ in range(n):
        s = np.nextafter(s, np.float32(-np.inf), dtype=np.float32)
        out.append(float(s))
    return out


def extended_model(proto: Any, new_tokens: list[str]) -> Any:
    """A copy of ``proto`` with ``new_tokens`` appended as normal pieces (ids ``len(pieces)`` on)."""
    out = _pb2().ModelProto()
    out.CopyFrom(proto)
    for token, score in zip(new_tokens, new_scores(proto, len(new_tokens))):
        piece = out.pieces.add()
        piece.piece, piece.score, piece.type = token, score, NORMAL
    # a trainer spec's vocab_size that disagrees with the pieces only confuses readers
    out.trainer_spec.vocab_size = len(out.pieces)
    return out


def write_model(base: BaseTokenizer, tokenizer_json: dict[str, Any], path: Path) -> bool:
    """Write the base's tokenizer.model extended with the new tokens of ``tokenizer_json`` to ``path``;
    False (nothing written) when the base has no tokenizer.model."""
    proto = base_model(base)
    if proto is None:
        return False
    vocab = tokenizer_json["model"]["vocab"]
    new = sorted((i, s) for s, i in vocab.items() if i >= base.first_new_id)
    if [i for i, _ in new] != list(range(base.first_new_id, base.first_new_id + len(new))):
        raise AssertionError("new token ids are not contiguous after the base's")
    data = extended_model(proto, [s for _, s in new]).SerializeToString()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


# ------------------------------------------------------------------------------------------ checks


def sentencepiece_mismatches(folder: str | Path, texts: Iterable[str], limit: int = 5) -> list[str]:
    """Documents that ``tokenizer.model`` and ``tokenizer.json`` of ``folder`` encode to different ids
    (special tokens off): one line each for the first ``limit``, then a count of the rest."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    folder = Path(folder)
    with reading(folder / MODEL_FILE, "cannot load the SentencePiece model"):
        sp = spm.SentencePieceProcessor(model_file=str(folder / MODEL_FILE))
    with reading(folder / "tokenizer.json", "cannot load tokenizer.json"):
        hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    out, more = [], 0
    it = iter(texts)
    while batch := list(itertools.islice(it, 256)):
        a = sp.encode(batch)
        b = [e.ids for e in hf.encode_batch_fast(batch, add_special_tokens=False)]
        for text, x, y in zip(batch, a, b):
            if x == y:
                continue
            if len(out) >= limit:
                more += 1
                continue
            k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
            at = sp.decode(x[:k])
            out.append(f"{_snippet(text)}: after {_snippet(at[-30:])} sentencepiece gives "
                       f"{[sp.id_to_piece(i) for i in x[k:k + 3]]}, tokenizers "
                       f"{[hf.id_to_token(i) for i in y[k:k + 3]]}")  # fmt: skip
    if more:
        out.append(f"... and {more} more documents")
    return out



def check_agreement(folder: str | Path, texts: Iterable[str]) -> None:
    """A UserError (one line naming tokenizer.model) when the folder's two files encode ``texts``
    differently: e.g. a base whose tokenizer.model is stale or belongs to another tokenizer."""
    folder = Path(folder)
    bad = sentencepiece_mismatches(folder, texts, limit=1)
    if bad:
        n = 1 + (int(bad[-1].split()[2]) if len(bad) > 1 else 0)
        raise UserError(f"disagrees with tokenizer.json on {n} document(s) (remove it to extend tokenizer.json "
                        f"alone), e.g. {bad[0]}", folder / MODEL_FILE)  # fmt: skip


def _snippet(text: str, n: int = 50) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")
