"""Device, precision and model loading: the one place every stage that runs a model asks.

* **Device.** ``auto`` is the GPU when there is one (CUDA), else the CPU; ``cpu``, ``cuda``, ``cuda:N``
  and ``mps`` force one. Every stage config that runs a model has a ``device`` field (``--device``).
  Training under ``accelerate launch`` takes the device accelerate assigns to the process instead.
* **bf16.** One rule: an explicit ``bf16`` wins; ``None`` means bf16 autocast where it is faster — GPUs
  that support it and CPUs with native bf16 (AVX512-BF16 / AMX). Weights stay fp32 (master copies for
  training, and the numbers evaluation prints do not depend on the storage dtype); autocast runs the
  matrix products in bf16.
* **Models** load from a local folder or an alias (:mod:`langadapt.models`), onto the device.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


def resolve_device(requested: str = "auto") -> torch.device:
    """The torch device a stage runs on (``auto``: CUDA when available, else CPU)."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {requested!r}: no CUDA GPU is visible (use --device cpu or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {requested!r}: MPS is not available here (use --device cpu or auto)")
    return device


def bf16_is_faster(device: torch.device | str = "cpu") -> bool:
    """bf16 autocast pays off on GPUs that support it and on CPUs with native bf16 (AVX512-BF16 / AMX)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "mps":
        return False
    return _cpu_has_native_bf16()


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Read once per process: init, distill, pretrain and eval each ask."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(requested: bool | None, device: torch.device | str = "cpu") -> bool:
    """The bf16 rule: an explicit flag wins; ``None`` means bf16 autocast where it is faster."""
    return bf16_is_faster(device) if requested is None else requested


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_model(name_or_path: str | Path, device: torch.device | str = "cpu", dtype: Any = None) -> PreTrainedModel:
    """A causal LM from a folder or alias, in ``dtype`` (default fp32), on ``device``."""
    from langadapt.models import load_model as load_from_disk

    return load_from_disk(name_or_path, dtype=dtype).to(device)


def logit_softcap(model_or_config: Any) -> float | None:
    """The final-logit softcapping of a model (Gemma 2: 30; Gemma 3 configs may set one), None when it has none.

    Such a model's logits are ``cap * tanh(h @ W.T / cap)``: code that applies the head to hidden states
    itself (bits per byte, init's KL probe) must cap them too, or it scores another distribution."""
    config = getattr(model_or_config, "config", model_or_config)
    cap = getattr(config, "final_logit_softcapping", None)
    return float(cap) if cap else None


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(logits / cap)`` (the identity when ``cap`` is None), as the model's own forward does."""
    import torch

    return logits if cap is None else torch.tanh(logits / cap) * cap


def head_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits from final (post-norm) hidden states: its head, then its softcap."""
    return softcap(model.get_output_embeddings()(hidden), logit_softcap(model))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def reuse_freed_memory() -> None:
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


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS now (glibc's ``malloc_trim``; nothing elsewhere).

    :func:`reuse_freed_memory` keeps up to 1 GB of freed memory in the heap for the next training step; a
    stage that frees large temporaries once and then allocates something else (embeddings init: the probe's
    activations, then the resized matrices) would otherwise carry them in its peak RSS."""
    import ctypes
    import platform

    if platform.system() != "Linux":
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc
        return


def cache_key(model: Any) -> str:
    """The name of the KV cache in ``model``'s forward (argument and output): ``cache`` in transformers
    5.2x, ``past_key_values`` before (still accepted there, with a deprecation warning per call)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
