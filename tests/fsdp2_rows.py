"""``train: new-embeddings`` under FSDP2, on CPU: run with ``torchrun --nproc_per_node 2`` or plain python.

accelerate offers FSDP only with GPUs (its CPU path is DDP on gloo), so this script does by hand what
``accelerate.prepare`` does for configs/accelerate/fsdp.yaml (``fully_shard`` on every decoder layer,
then on the root; the optimizer over the sharded parameters) and then what langadapt's loop does:
:meth:`RowFreeze.attach` on the prepared model, ``mask_grads`` between backward and clipping, fused
AdamW with decay 0 on the embedding matrices. Every rank trains on the same rows, so the sharded run
must end where one unsharded process ends. Test code only, driven by tests/test_pretrain_dist.py.

usage: fsdp2_rows.py MODEL_DIR PACKED_DIR OUT.safetensors [--no-mask]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from langadapt.config import PretrainConfig
from langadapt.data.reader import PackedDataset
from langadapt.models import load_model
from langadapt.train import masking, optim, trainable


def main(model_dir: Path, data: Path, out: Path, mask: bool) -> None:
    sharded = "RANK" in os.environ  # started by torchrun
    if sharded:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = load_model(model_dir)
    model.config.use_cache = False
    base = json.loads((model_dir / "extension.json").read_text())["base_vocab_size"]
    from transformers import AutoTokenizer

    n_tokens = len(AutoTokenizer.from_pretrained(model_dir))
    selection = trainable.select(model, "new-embeddings,layers.1", vocab_size=n_tokens, base_vocab=base)
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    cfg = PretrainConfig(model=str(model_dir), data=str(data), lr=1e-2, weight_decay=0.1)
    groups = optim.param_groups(model, cfg.weight_decay, trainable.embedding_matrices(model))
    optimizer = optim.make_optimizer(cfg, groups, torch.device("cpu"))
    freeze = selection.row_freeze.attach(model)
    before = freeze.fingerprint()
    dataset = PackedDataset(data)
    losses = []
    for step in range(3):
        rows = dataset.batch([2 * step, 2 * step + 1])
        batch = {k: torch.from_numpy(v) for k, v in rows.items()}
        loss = model(**masking.forward_kwargs("sdpa", batch["input_ids"], batch["position_ids"])).loss
        loss.backward()
        if mask:
            freeze.mask_grads()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    unchanged = freeze.fingerprint() == before
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
             for k, v in model.state_dict().items()}  # fmt: skip
    if not sharded or dist.get_rank() == 0:
        from safetensors.torch import save_file

        save_file(state, str(out))
        report = {"losses": losses, "frozen_rows_unchanged": unchanged}
        out.with_suffix(".json").write_text(json.dumps(report))
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), "--no-mask" not in sys.argv)
