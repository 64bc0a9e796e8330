"""Every stage that runs a model uses the GPU when there is one (skipped without CUDA; bench/gpu_check.sh
runs it on a lent GPU machine): init's probe, distill, pretrain and eval on a tiny model, through the
stage runner, with the device and precision each recorded in stage.json."""

from __future__ import annotations

import json

import pytest
import tiny

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RECIPE = """
name: gpu
base_model: {model}
runs_dir: {runs}
{data}extend:
  num_new_tokens: 60
init: {{}}
distill:
  steps: 4
  calibrate_steps: 2
  batch_size: 4
  seq_len: 32
pack:
  seq_len: 64
  tokens: 4096
  workers: 1
pretrain:
  train: new-embeddings,layers
  lr: 1.0e-3
  micro_batch: 2
  max_steps: 4
  eval_every: 2
  eval_max_docs: 4
eval:
  max_docs: 4
  max_len: 64
  stride: 32
"""


def test_every_model_stage_runs_on_the_gpu(tmp_path, tiny_tied, hu_texts, en_texts):
    from langadapt.pipeline import load_recipe_file, run_recipe

    data = tiny.recipe_corpora(tmp_path, hu_texts, en_texts)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(model=tiny_tied, runs=tmp_path / "runs", data=data))
    run = run_recipe(load_recipe_file(path))

    def record(folder: str) -> dict:
        return json.loads((run / folder / "stage.json").read_text())

    assert record("eval")["device"].startswith("cuda") and record("eval")["bf16"] is True
    assert record("pretrain")["frozen_rows_unchanged"] is True and record("pretrain")["bf16"] is True
    distill = record("distill")
    assert distill["device"].startswith("cuda") and distill["loss"]["distill"]["last"] < distill["loss"]["distill"]["first"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["models"][-1]["target"]["bpb"] < metrics["models"][0]["target"]["bpb"] * 1.5
