"""What trains: a comma-separated union of ``full``, ``embeddings``, ``new-embeddings``,
``new-input-embeddings`` and module-name patterns; and the one "train only these rows" mechanism.

``new-embeddings`` trains only the rows the tokenizer added (``base_vocab_size <= id < len(tokenizer)``)
of the input and output matrices (``new-input-embeddings``: of the input matrix only; a tied head is the
same matrix). Every trainer uses this gradient mask: ``train pretrain`` and ``embeddings distill``
through :class:`langadapt.train.core.TrainCore`, a transformers/trl ``Trainer`` through
:class:`RowFreezeCallback`. Two things keep every other row *bit-identical*:

1. their gradient is zeroed before the optimizer sees it, so the gradient norm used for clipping counts
   only the new rows, and Adam's moments for frozen rows stay exactly 0, which makes their Adam update
   ``m / (sqrt(v) + eps)`` exactly 0;
2. the embedding matrices get weight decay 0 (see ``optim.param_groups``): decoupled decay
   ``p -= lr * wd * p`` would otherwise shrink frozen rows while their gradient is 0.

(2) is exact whatever the optimizer holds (sharded fp32 master copies included): a zero gradient with
zero decay leaves any copy unchanged. Where (1) can happen depends on the backend, which is why the
freezer is attached to the model *after* ``accelerator.prepare`` (:meth:`RowFreeze.attach`):

- one process, DDP: ``param.grad`` is a full matrix after backward (all-reduced at the sync step); the
  loop calls :meth:`RowFreeze.mask_grads` between backward and clipping.
- FSDP2: ``fully_shard`` replaces every parameter by a new dim-0-sharded DTensor, so a hook registered
  before ``prepare`` is lost, and a tensor hook on the sharded parameter never fires (its gradient is
  reduce-scattered straight into ``.grad``; checked on torch 2.13). After backward ``.grad`` is a block
  of whole rows, masked by global row index from the shard's offset: the same ``mask_grads``.
- DeepSpeed ZeRO-1/2/3: the engine owns the gradients (``.grad`` stays None) and accelerate runs backward
  and the optimizer step in one call, so there is no point in between. DeepSpeed keeps the Parameter
  objects, and the gradient autograd computes for the (gathered) parameter is full-shaped, so a tensor
  hook masks it before the AccumulateGrad node whose post-hook DeepSpeed uses to reduce it.

Every path ends with :meth:`RowFreeze.unchanged`, the frozen rows' sha256 compared with that at attach (stage.json's
``frozen_rows_unchanged``). Tested on CPU through the CLI under ``accelerate launch`` (gloo): one
process, DDP, DeepSpeed ZeRO-2/3 and FSDP2 (tests/test_pretrain_dist.py; FSDP2 needs a test-only shim
because accelerate offers FSDP only on GPUs); train sft and train dpo under DDP (tests/test_align_dist.py).
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langadapt.errors import UserError
from langadapt.runs import EXTENSION_JSON, extension_records


@dataclass
class Selection:
    trainable: list[str]
    """Names of the parameters that train."""
    trainable_params: int
    """Trainable parameters (for new-embeddings: only the new rows)."""
    total_params: int
    row_freeze: RowFreeze | None = None


def base_vocab_size(model_dir: Path) -> int:
    """``base_vocab_size`` from ``extension.json`` (written by ``tokenizer extend``).

    Looked for in the model folder, then along the folders its records name
    (:func:`langadapt.runs.record_folders`: embeddings init records its tokenizer, distill its model), so a
    run folder's model/ or distill/ finds tokenizer/.
    """
    for info, _ in extension_records(model_dir):
        if "base_vocab_size" in info:
            return int(info["base_vocab_size"])
    raise UserError(
        f"train 'new-embeddings' needs {EXTENSION_JSON} with base_vocab_size (from `tokenizer extend`) in the "
        "model folder or a folder its stage.json names",
        model_dir,
    )


def spec_items(spec: str) -> list[str]:
    """``"new-embeddings, layers"`` -> ``["new-embeddings", "layers"]``."""
    return [s.strip() for s in spec.split(",") if s.strip()]


NEW_ROWS = ("new-embeddings", "new-input-embeddings")


def wants_row_freeze(spec: str) -> bool:
    """Only the new rows of the embedding matrices train (not the whole matrices)."""
    items = set(spec_items(spec))
    return bool(items & set(NEW_ROWS)) and not {"full", "embeddings"} & items


def is_tied(model: torch.nn.Module) -> bool:
    """The output matrix is the input matrix (one Parameter)."""
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def select(model: torch.nn.Module, spec: str, *, vocab_size: int | None = None,
           base_vocab: int | None = None) -> Selection:  # fmt: skip
    """Set ``requires_grad`` per ``spec``; with new-embeddings also return the row freezer.

    ``spec`` is a comma-separated union of ``full``, ``embeddings``, ``new-embeddings``,
    ``new-input-embeddings`` and module-name patterns, so ``new-embeddings,layers,norm`` trains every
    transformer block and only the new rows of the embedding matrices (what the demo trains: English
    keeps its token rows exactly).
    """
    total = sum(full_numel(p) for p in model.parameters())
    names = dict(model.named_parameters(remove_duplicate=True))
    matrices = {n for n, p in names.items() if any(p is e for e in embedding_matrices(model))}
    input_matrix = {n for n, p in names.items() if p is model.get_input_embeddings().weight}
    chosen: set[str] = set()
    for item in spec_items(spec):
        if item == "full":
            chosen |= set(names)
        elif item in ("embeddings", "new-embeddings"):
            chosen |= matrices
        elif item == "new-input-embeddings":
            chosen |= input_matrix
        else:
            chosen |= _match_patterns(names, [item])
    if not chosen:
        raise UserError(f"train {spec!r} selects no parameter")
    for name, param in names.items():
        param.requires_grad_(name in chosen)
    row_freeze = None
    trainable = sum(full_numel(names[n]) for n in chosen)
    if wants_row_freeze(spec):
        if base_vocab is None or vocab_size is None:
            raise ValueError("new-embeddings needs base_vocab and vocab_size")
        if not 0 < base_vocab < vocab_size:
            raise UserError(f"new-embeddings: base_vocab_size {base_vocab} leaves no new rows "
                            f"(tokenizer has {vocab_size})")  # fmt: skip
        row_freeze = RowFreeze(base_vocab, vocab_size)
        trainable -= sum(full_numel(names[n]) for n in chosen & matrices)
        trainable += (vocab_size - base_vocab) * sum(full_shape(names[n])[1] for n in chosen & matrices)
    return Selection(sorted(chosen), trainable, total, row_freeze)


def embedding_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Input and output matrices, once each (a tied head is the same Parameter)."""
    out: list[torch.nn.Parameter] = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and all(head.weight is not p for p in out):
        out.append(head.weight)
    return out


def _match_patterns(names: dict[str, torch.nn.Parameter], patterns: list[str]) -> set[str]:
    """fnmatch patterns on parameter names; a pattern without wildcards matches as a substring."""
    chosen: set[str] = set()
    for pat in patterns:
        glob = pat if any(c in pat for c in "*?[") else f"*{pat}*"
        hits = {n for n in names if fnmatch.fnmatchcase(n, glob)}
        if not hits:
            raise UserError(f"train pattern {pat!r} matches no parameter (e.g. {next(iter(names))})")
        chosen |= hits
    return chosen


def full_shape(param: torch.Tensor) -> tuple[int, ...]:
    """A parameter's logical shape, also when ZeRO-3 has partitioned it to an empty tensor."""
    return tuple(getattr(param, "ds_shape", param.shape))


def full_numel(param: torch.Tensor) -> int:
    return int(getattr(param, "ds_numel", param.numel()))


class RowFreeze:
    """Keep rows ``[0, base)`` and ``[end, rows)`` of the embedding matrices exactly as they were."""

    def __init__(self, base: int, end: int) -> None:
        self.base, self.end = base, end
        self.params: list[torch.nn.Parameter] = []
        self.deepspeed = False
        self.handles: list[Any] = []
        self.attached_fingerprint: list[str] = []

    def attach(self, model: torch.nn.Module, *, deepspeed: bool = False) -> RowFreeze:
        """Bind to the trainable embedding matrices of the model *as prepared* (sharded, wrapped or not).

        Every rank calls it (the fingerprint gathers sharded matrices). A matrix that does not train
        (the untied head under ``new-input-embeddings``) has no gradient and no optimizer state."""
        self.params = [p for p in embedding_matrices(model) if p.requires_grad]
        self.deepspeed = deepspeed
        if deepspeed:  # the engine owns the gradients: mask them as autograd produces them
            self.handles = [p.register_hook(functools.partial(self._masked, full_shape(p)[0]))
                            for p in self.params]  # fmt: skip
        self.attached_fingerprint = self.fingerprint()
        return self

    def unchanged(self) -> bool:
        """Frozen rows as they were at :meth:`attach` (every rank calls it, like attach)."""
        return self.fingerprint() == self.attached_fingerprint

    def mask_grads(self) -> None:
        """Zero the frozen rows of ``.grad`` (after backward, before clipping and the optimizer step)."""
        if self.deepspeed:
            return  # done by the hooks
        for p in self.params:
            if p.grad is not None:
                local, offset = _local_rows(p.grad)
                local.mul_(self._keep(offset, local)[:, None])

    def _masked(self, rows: int, grad: torch.Tensor) -> torch.Tensor:
        if grad.shape[0] != rows:  # a partitioned gradient would silently defeat the mask
            raise RuntimeError(f"row freeze: gradient has {grad.shape[0]} rows, the matrix {rows}")
        return grad * self._keep(0, grad)[:, None]

    def _keep(self, offset: int, local: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(offset, offset + local.shape[0], device=local.device)
        return ((rows >= self.base) & (rows < self.end)).to(local.dtype)

    def fingerprint(self) -> list[str]:
        """sha256 of the frozen rows of each matrix (under FSDP2 / ZeRO-3 a collective: every rank calls)."""
        import hashlib

        digests = []
        for p in self.params:
            full = _gathered(p)
            h = hashlib.sha256()
            for block in (full[: self.base], full[self.end :]):
                for chunk in block.split(4096):  # a 7B model's matrix is ~1 GB: copy a slice at a time
                    h.update(chunk.float().cpu().contiguous().numpy().tobytes())
            digests.append(h.hexdigest())
        return digests


def _local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows this process holds and the global index of the first (FSDP2 shards dim 0)."""
    if not hasattr(tensor, "to_local"):
        return tensor, 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = tensor.device_mesh, tensor.placements
    _, (offset, *_) = compute_local_shape_and_global_offset(tensor.shape, mesh, placements)
    return tensor.to_local(), int(offset)


def _gathered(param: torch.nn.Parameter) -> torch.Tensor:
    """The full matrix: DTensor shards all-gathered, ZeRO-3 partitions gathered."""
    if hasattr(param, "full_tensor"):
        return param.detach().full_tensor()
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    return param.detach()



def __getattr__(name: str) -> Any:
    # RowFreezeCallback subclasses transformers.TrainerCallback, whose import costs ~2 s: made on first use
    if name == "RowFreezeCallback":
        globals()[name] = cls = _make_callback_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_callback_class() -> type:
    from transformers import TrainerCallback

    class RowFreezeCallback(TrainerCallback):
        """:class:`RowFreeze` for a transformers / trl ``Trainer`` (SFT, DPO): pass it in ``callbacks=[...]``.

        It binds to the model the Trainer trains at ``on_train_begin`` (after the Trainer's own
        ``accelerator.prepare``), zeroes the frozen rows' gradients at ``on_pre_optimizer_step`` and records
        :meth:`RowFreeze.unchanged` at ``on_train_end``, over every process (``self.unchanged``). Give the
        embedding matrices weight decay 0 (:func:`langadapt.train.optim.param_groups`), or decay moves the
        frozen rows. The
        Trainer clips before this event, so its gradient norm counts the frozen rows too (their update
        stays exactly zero; only the new rows' clipping scale differs from :class:`TrainCore`'s).
        """

        def __init__(self, row_freeze: RowFreeze) -> None:
            self.row_freeze = row_freeze
            self.attached = False
            self.unchanged: bool | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if not self.attached and model is not None:
                deepspeed = bool(getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None))
                self.row_freeze.attach(model, deepspeed=deepspeed)
                self.attached = True

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.row_freeze.mask_grads()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.attached:
                from accelerate.utils import gather_object

                # every rank's own copy: under DDP each process holds and steps a full replica, and the
                # record (written by rank 0) must not speak for a rank whose rows moved
                self.unchanged = all(gather_object([self.row_freeze.unchanged()]))

    RowFreezeCallback.__module__ = __name__
    return RowFreezeCallback
