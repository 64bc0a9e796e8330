"""Run the langadapt CLI under ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` on CPU.

accelerate offers FSDP only on GPUs (on CPU it turns every multi-process launch into DDP on gloo). To
test langadapt's loop under accelerate's real FSDP2 preparation (``fully_shard``, the optimizer switched
to the sharded parameters, sharded checkpoints, the gathered final state dict), this test-only shim makes
accelerate treat the gloo processes as GPUs that live on the CPU. Nothing else changes.
"""

from __future__ import annotations

import sys

import accelerate
import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType


def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
    return "gloo", DistributedType.MULTI_GPU


def _set_device(self):
    self.device = torch.device("cpu")


_init = accelerate.Accelerator.__init__


def _accelerator_init(self, *args, **kwargs):
    _init(self, *args, **{**kwargs, "cpu": False})  # langadapt asks for cpu=True on a machine without CUDA


PartialState._prepare_backend = _prepare_backend
PartialState.set_device = _set_device
accelerate.Accelerator.__init__ = _accelerator_init

if __name__ == "__main__":
    from langadapt.cli import main

    sys.argv = ["langadapt", *sys.argv[1:]]
    main()
