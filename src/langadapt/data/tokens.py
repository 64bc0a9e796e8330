"""What a tokenizer says about document boundaries, and a fingerprint that identifies it.

Packing adds the special tokens itself (the raw ``tokenizers.Tokenizer`` is called with
``add_special_tokens=False``), so it has to decide explicitly whether the model expects a BOS at the
start of every document. That decision is made here, from the tokenizer's own files, and recorded in
``pack.json`` so a reader can tell how the rows were made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langadapt.errors import UserError
from langadapt.models import load_fast_tokenizer
from langadapt.tokenizer.base import merge_pairs


@dataclass(frozen=True)
class SpecialTokens:
    eos: str
    eos_id: int
    bos: str | None
    """The BOS token put before every document, or None when the model expects none."""
    bos_id: int | None
    bos_reason: str
    """Which file and setting made the BOS decision (recorded in pack.json)."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", path) from exc


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json stores special tokens as a string or as an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def special_tokens(tokenizer_dir: Path) -> SpecialTokens:
    """EOS from tokenizer_config.json; BOS only where the tokenizer itself would add one.

    A BOS is added when tokenizer_config.json sets ``add_bos_token: true``, or, where it does not say,
    when the post-processor template of tokenizer.json starts with a special token (Llama-2/3,
    Mistral); otherwise (GPT-2, SmolLM, Qwen) documents start without one, as they would under the
    model's own ``encode``.
    """
    tok_json = _read_json(tokenizer_dir / "tokenizer.json")
    cfg = _read_json(tokenizer_dir / "tokenizer_config.json")
    tok = load_fast_tokenizer(tokenizer_dir)

    eos = _token_content(cfg.get("eos_token"))
    if eos is None or tok.token_to_id(eos) is None:
        raise UserError(
            "tokenizer has no end-of-document (eos) token in tokenizer_config.json", tokenizer_dir
        )

    # An explicit add_bos_token wins: transformers rebuilds the post-processor template from it on load.
    flag = cfg.get("add_bos_token")
    if flag is True:
        bos, reason = _token_content(cfg.get("bos_token")), "tokenizer_config.json add_bos_token=true"
        if bos is None:
            raise UserError("add_bos_token is true but there is no bos_token", tokenizer_dir)
    elif flag is False:
        bos, reason = None, "tokenizer_config.json add_bos_token=false"
    else:
        bos, reason = _template_bos(tok_json.get("post_processor"))
        reason = reason or "no add_bos_token and no post_processor template that adds one"
    if bos is not None and tok.token_to_id(bos) is None:
        raise UserError(f"BOS token {bos!r} is not in the vocabulary", tokenizer_dir)
    return SpecialTokens(eos=eos, eos_id=tok.token_to_id(eos), bos=bos,
                         bos_id=None if bos is None else tok.token_to_id(bos), bos_reason=reason)  # fmt: skip


def _template_bos(post: Any) -> tuple[str | None, str]:
    """The special token a TemplateProcessing (possibly inside a Sequence) puts first, if any."""
    if not isinstance(post, dict):
        return None, ""
    if post.get("type") == "Sequence":
        for inner in post.get("processors", []):
            found = _template_bos(inner)
            if found[0] is not None:
                return found
        return None, ""
    if post.get("type") != "TemplateProcessing" or not post.get("single"):
        return None, ""
    first = post["single"][0]
    if "SpecialToken" in first:
        return first["SpecialToken"]["id"], "tokenizer.json post_processor template starts with it"
    return None, "tokenizer.json post_processor template starts with the text"


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """sha256 of what decides the ids: the model section (vocab, merges) and the added tokens.

    Hashing tokenizer.json's bytes would call two equal tokenizers different whenever transformers
    re-serialises the file (as ``save_pretrained`` into a model folder does), so the content is
    canonicalised first: merges as pairs, keys sorted, only the parts that map text to ids.
    """
    data = _read_json(Path(tokenizer_dir) / "tokenizer.json")
    model = dict(data.get("model") or {})
    if isinstance(model.get("merges"), list):
        model["merges"] = merge_pairs(model)
    added = sorted((t["id"], t["content"]) for t in data.get("added_tokens") or [])
    canonical = {
        "model": model,
        "added_tokens": added,
        "normalizer": data.get("normalizer"),
        "pre_tokenizer": data.get("pre_tokenizer"),
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
