"""What trains: a comma-separated union of ``full``, ``embeddings``, ``new-embeddings`` and module-name patterns.

``new-embeddings`` trains only the rows the tokenizer added (``base_vocab_size <= id < len(tokenizer)``)
of the input and output matrices. Two things keep every other row *bit-identical*:

1. a gradient hook zeroes their gradient before it is accumulated (and, under DDP, before it is
   all-reduced), so the gradient norm used for clipping counts only the new rows, and Adam's moments for
   frozen rows stay exactly 0, which makes their Adam update ``m / (sqrt(v) + eps)`` exactly 0;
2. the embedding matrices get weight decay 0 (see ``optim.param_groups``): decoupled decay
   ``p -= lr * wd * p`` would otherwise shrink frozen rows while their gradient is 0.

Why this also holds under FSDP and DeepSpeed ZeRO-3, where row-level freezing is a known failure: (2)
is exact whatever the optimizer holds (sharded fp32 master copies included), because a zero gradient
with zero decay leaves *any* copy unchanged; (1) needs the gradient as rows, not as a shard of a flat
buffer. With FSDP2 (dim-0 sharding, ``fsdp_version: 2`` in configs/accelerate/fsdp.yaml) a shard is a
block of whole rows, so the hook masks by global row index from the DTensor's offset. With ZeRO-2/3 the
gradient of the gathered parameter has its full shape when autograd computes it, and a tensor hook runs
before the AccumulateGrad node whose post-hook DeepSpeed uses to reduce-scatter it, so the same row
mask should apply; that reasoning is not verified on a cluster yet. Only the plain / DDP path is tested
here (no GPUs); :meth:`RowFreeze.unchanged` is the check to run on a cluster.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langadapt.errors import UserError

EXTENSION_JSON = "extension.json"


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

    Looked for in the model folder, then along the folders its ``stage.json`` names (embeddings init
    records its tokenizer, distill its model), so a run folder's model/ or distill/ finds tokenizer/.
    """
    seen: set[Path] = set()
    todo = [Path(model_dir)]
    while todo:
        folder = todo.pop(0)
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        ext = folder / EXTENSION_JSON
        if ext.exists():
            info = json.loads(ext.read_text(encoding="utf-8"))
            if "base_vocab_size" in info:
                return int(info["base_vocab_size"])
        stage = folder / "stage.json"
        if stage.exists():
            config = json.loads(stage.read_text(encoding="utf-8")).get("config", {})
            todo += [Path(config[k]) for k in ("tokenizer", "model") if isinstance(config.get(k), str) and config[k]]
    raise UserError(
        f"train 'new-embeddings' needs {EXTENSION_JSON} with base_vocab_size (from `tokenizer extend`) in the "
        "model folder or a folder its stage.json names",
        model_dir,
    )


def spec_items(spec: str) -> list[str]:
    """``"new-embeddings, layers"`` -> ``["new-embeddings", "layers"]``."""
    return [s.strip() for s in spec.split(",") if s.strip()]


def wants_row_freeze(spec: str) -> bool:
    """Only the new rows of the embedding matrices train (not the whole matrices)."""
    items = spec_items(spec)
    return "new-embeddings" in items and not {"full", "embeddings"} & set(items)


def select(model: torch.nn.Module, spec: str, *, vocab_size: int | None = None,
           base_vocab: int | None = None) -> Selection:  # fmt: skip
    """Set ``requires_grad`` per ``spec``; with new-embeddings also return the row freezer.

    ``spec`` is a comma-separated union of ``full``, ``embeddings``, ``new-embeddings`` and module-name
    patterns, so ``new-embeddings,layers,norm`` trains every transformer block and only the new rows of
    the embedding matrices (what the demo trains: English keeps its token rows exactly).
    """
    total = sum(p.numel() for p in model.parameters())
    names = dict(model.named_parameters(remove_duplicate=True))
    matrices = {n for n, p in names.items() if any(p is e for e in _embedding_matrices(model))}
    chosen: set[str] = set()
    for item in spec_items(spec):
        if item == "full":
            chosen |= set(names)
        elif item in ("embeddings", "new-embeddings"):
            chosen |= matrices
        else:
            chosen |= _match_patterns(names, [item])
    if not chosen:
        raise UserError(f"train {spec!r} selects no parameter")
    for name, param in names.items():
        param.requires_grad_(name in chosen)
    row_freeze = None
    trainable = sum(names[n].numel() for n in chosen)
    if wants_row_freeze(spec):
        if base_vocab is None or vocab_size is None:
            raise ValueError("new-embeddings needs base_vocab and vocab_size")
        if not 0 < base_vocab < vocab_size:
            raise UserError(f"new-embeddings: base_vocab_size {base_vocab} leaves no new rows "
                            f"(tokenizer has {vocab_size})")  # fmt: skip
        row_freeze = RowFreeze(_embedding_matrices(model), base_vocab, vocab_size)
        trainable -= sum(names[n].numel() for n in chosen & matrices)
        trainable += (vocab_size - base_vocab) * sum(p.shape[1] for p in row_freeze.params)
    return Selection(sorted(chosen), trainable, total, row_freeze)


def _embedding_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
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


class RowFreeze:
    """Keep rows ``[0, base)`` and ``[end, rows)`` of embedding matrices exactly as they were."""

    def __init__(self, params: list[torch.nn.Parameter], base: int, end: int) -> None:
        self.params = params
        self.base, self.end = base, end
        # CPU copies of the frozen rows, only for :meth:`unchanged` (tests, cluster checks).
        self.saved = [(p.detach()[:base].cpu().clone(), p.detach()[end:].cpu().clone()) for p in params]
        self.handles: list[Any] = []

    def add_grad_hooks(self) -> None:
        for p in self.params:
            self.handles.append(p.register_hook(self._mask_grad))

    def _mask_grad(self, grad: torch.Tensor) -> torch.Tensor:
        local, offset = grad, 0
        if hasattr(grad, "to_local"):  # FSDP2 DTensor, sharded on dim 0: a block of whole rows
            from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

            _, (offset, *_) = compute_local_shape_and_global_offset(grad.shape, grad.device_mesh,
                                                                    grad.placements)  # fmt: skip
            local = grad.to_local()
        rows = torch.arange(offset, offset + local.shape[0], device=local.device)
        keep = ((rows >= self.base) & (rows < self.end)).to(local.dtype)
        masked = local * keep[:, None]
        if local is grad:
            return masked
        from torch.distributed.tensor import DTensor

        return DTensor.from_local(masked, grad.device_mesh, grad.placements)

    def unchanged(self, params: list[torch.nn.Parameter] | None = None) -> bool:
        return all(
            torch.equal(p.detach()[: self.base].cpu(), h) and torch.equal(p.detach()[self.end :].cpu(), t)
            for p, (h, t) in zip(params or self.params, self.saved)
        )
