"""Document masking for packed rows: which token may attend to which, and which tokens are predicted.

A packed row holds several documents; their position ids restart at 0 (a document cut at the end of a
row continues in the next row as a new segment). A token may attend only to earlier tokens of its own
segment, and the first token of a segment is never a label (it would be predicted from the previous
document's last token).

Segments are found exactly as transformers does (``masking_utils.find_packed_sequence_indices``): a new
segment starts wherever the position id does not grow by one. We do not rely on transformers deriving
the mask itself: it does so only when ``attention_mask is None`` *and* no KV cache exists, and a model in
train mode with the default ``use_cache=True`` builds a cache and silently attends across documents
(seen with transformers 5.24). So every path here passes its mask explicitly, and the loop also passes
``use_cache=False``.

Paths (``PretrainConfig.attention``):
- ``sdpa``  : an explicit boolean block-diagonal causal mask ``[B, 1, L, L]`` (exact; CPU and GPU; the
              mask costs B*L*L bytes and SDPA cannot use its flash kernel with a mask, so it is slow on GPU).
- ``flex``  : a ``BlockMask`` for ``torch.nn.attention.flex_attention`` (GPU; skips fully masked blocks,
              so the cost falls with shorter documents). Needs torch.compile to be fast.
- ``flash`` : flash-attention varlen through transformers' ``flash_attention_2`` path with explicit
              ``cu_seq_lens`` over the flattened batch (needs the ``flash-attn`` package and a GPU).
- ``eager`` : the same mask as 0 / most-negative floats added to the scores (eager attention *adds* its
              mask; Gemma 2 adds it after its attention-logit softcapping, so masked scores still vanish).
- ``auto``  : what the architecture supports (:func:`supported_paths`, from transformers' class flags
              ``_supports_flex_attn`` / ``_supports_sdpa``): flex on CUDA, else sdpa, else eager (Gemma 2
              has no SDPA: its attention softcapping needs the eager or flex kernels).

Sliding windows (Mistral v0.1, Phi-3 when configured, Gemma 2/3's local layers, Qwen with
``use_sliding_window``): an explicit mask replaces the one transformers would build, window included, so
:func:`attention_windows` reads the window from the config and every path adds it: the boolean and
additive masks and the BlockMask get ``q - kv < window`` (transformers' ``sliding_window_overlay``),
one mask per layer type (a ``{"full_attention": ..., "sliding_attention": ...}`` mapping, which models
with ``config.layer_types`` accept) where layers differ; flash-attention applies each layer's window itself.
"""

from __future__ import annotations

from typing import Any

import torch

from langadapt.errors import UserError

IGNORE = -100
"""Label value the loss skips (transformers' ignore_index)."""

HF_IMPLEMENTATION = {"sdpa": "sdpa", "flex": "flex_attention", "flash": "flash_attention_2", "eager": "eager"}
"""Our attention path -> the model's ``attn_implementation``."""


def supported_paths(model: Any) -> tuple[str, ...]:
    """The attention paths this architecture supports, as transformers' class flags say (eager always)."""
    cls = model if isinstance(model, type) else type(model)
    paths = []
    if getattr(cls, "_supports_flex_attn", False):
        paths.append("flex")
    if getattr(cls, "_supports_flash_attn", False) or getattr(cls, "_supports_flash_attn_2", False):
        paths.append("flash")
    if getattr(cls, "_supports_sdpa", False):
        paths.append("sdpa")
    return (*paths, "eager")


def choose_attention(requested: str, device: torch.device, model: Any = None) -> str:
    """Resolve ``auto`` to a concrete path for this device and architecture (``model``: the model or its
    class; None: any); refuse paths the machine or the architecture cannot run."""
    supported = supported_paths(model) if model is not None else ("flex", "flash", "sdpa", "eager")
    if requested == "auto":
        if device.type == "cuda" and _has_flex() and "flex" in supported:
            return "flex"
        return "sdpa" if "sdpa" in supported else "eager"
    if requested not in supported:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise UserError(f"attention {requested!r}: {name} does not support it (transformers supports "
                        f"{', '.join(supported)} for it; 'auto' chooses among them)")  # fmt: skip
    if requested == "flash":
        import importlib.util

        if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
            raise UserError("attention 'flash' needs a CUDA GPU and the flash-attn package")
    if requested == "flex" and not _has_flex():
        raise UserError("attention 'flex' needs torch >= 2.5 (torch.nn.attention.flex_attention)")
    return requested


def _has_flex() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


def segment_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, L]``: True where a new segment starts (position id does not grow by 1; column 0)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return starts


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` segment index per token, 1 for the first segment of each row."""
    return segment_starts(position_ids).long().cumsum(dim=1)


def document_labels(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Labels for a causal LM whose loss shifts internally: IGNORE at each segment start.

    transformers predicts ``labels[t]`` from the logits at ``t - 1``; masking the start of a segment
    therefore removes exactly the cross-document prediction.
    """
    labels = input_ids.clone()
    labels[segment_starts(position_ids)] = IGNORE
    return labels


Windows = dict[str, "int | None"] | int | None
"""None: no sliding window; an int: every layer's window; a dict: the window (or None) per layer type."""


def attention_windows(config: Any) -> Windows:
    """The sliding windows an explicit mask must carry for a model with ``config`` (see module doc)."""
    if config is None:
        return None
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        if window is None or "sliding_attention" not in layer_types:
            return None
        return {"full_attention": None, "sliding_attention": int(window)}
    return int(window) if window else None


def sdpa_mask(position_ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Explicit boolean block-diagonal causal mask ``[B, 1, L, L]`` (True = may attend); ``window``: only
    the last ``window`` tokens (the query's own included), as transformers' sliding window."""
    seg = segment_ids(position_ids)
    length = seg.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
    if window is not None:
        causal = causal & ~torch.ones_like(causal).tril(-window)
    same = seg[:, :, None] == seg[:, None, :]
    return (same & causal)[:, None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The boolean mask as 0 / most-negative floats, for attention that adds the mask to its scores."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def flex_block_mask(position_ids: torch.Tensor, window: int | None = None) -> Any:
    """A flex_attention ``BlockMask`` with the same meaning as :func:`sdpa_mask`."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids(position_ids)

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = (kv_idx <= q_idx) & (seg[b, q_idx] == seg[b, kv_idx])
        return allowed if window is None else allowed & (kv_idx > q_idx - window)

    batch, length = seg.shape
    return create_block_mask(mask_mod, batch, None, length, length, device=seg.device)


def flash_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """``cu_seq_lens`` over the flattened batch for flash-attention varlen (every row start is a cut)."""
    flat = segment_starts(position_ids).flatten()
    starts = torch.nonzero(flat).flatten().to(torch.int32)
    total = torch.tensor([flat.numel()], dtype=torch.int32, device=flat.device)
    cu = torch.cat([starts, total])
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def _mask(path: str, position_ids: torch.Tensor, window: int | None) -> Any:
    if path == "sdpa":
        return sdpa_mask(position_ids, window)
    if path == "eager":  # eager attention *adds* the mask to the scores: a boolean one would be wrong
        return additive_mask(sdpa_mask(position_ids, window))
    return flex_block_mask(position_ids, window)


def forward_kwargs(path: str, input_ids: torch.Tensor, position_ids: torch.Tensor,
                   config: Any = None) -> dict[str, Any]:  # fmt: skip
    """Everything a transformers causal LM needs for one document-masked forward (labels included);
    ``config``: the model's, for its sliding windows (:func:`attention_windows`)."""
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "labels": document_labels(input_ids, position_ids),
        "use_cache": False,  # a cache disables transformers' packed-sequence handling; see module doc
    }
    if path == "flash":  # flash-attention applies each layer's sliding window itself
        kwargs.update(flash_kwargs(position_ids))
        return kwargs
    if path not in ("sdpa", "eager", "flex"):
        raise ValueError(f"unknown attention path {path!r}")
    windows = attention_windows(config)
    if isinstance(windows, dict):
        kwargs["attention_mask"] = {kind: _mask(path, position_ids, w) for kind, w in windows.items()}
    else:
        kwargs["attention_mask"] = _mask(path, position_ids, windows)
    return kwargs
