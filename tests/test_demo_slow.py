"""`langadapt demo` end to end on the real SmolLM2-135M (about 10 minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_demo_adapts_smollm2_to_hungarian(tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "langadapt.cli", "demo", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=3000, check=False,
    )  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "demo-hu"
    models = {m["label"]: m for m in json.loads((run / "eval" / "metrics.json").read_text())["models"]}
    base, init, distilled, final = models["base"], models["init"], models["distill"], models["pretrain"]
    print(f"demo took {minutes:.1f} min")
    # Tokenizer: Hungarian needs far fewer tokens, English exactly as many as before.
    assert final["target"]["tokens_per_word"] < 0.6 * base["target"]["tokens_per_word"]
    assert final["english"]["tokens"] == base["english"]["tokens"]
    # Embeddings: English kept, distillation helps. (Init vs base on Hungarian is checked on a larger
    # sample in test_embeddings_slow.py: on the demo's 24 documents one long, repetitive page, which
    # the base model copies in context, can outweigh the rest.)
    assert init["english"]["bpb"] < 1.01 * base["english"]["bpb"]
    assert distilled["target"]["bpb"] < init["target"]["bpb"]
    # Continual pretraining: the targets.
    assert final["target"]["bpb"] <= 0.75 * base["target"]["bpb"]
    assert final["english"]["bpb"] <= 1.01 * base["english"]["bpb"]
    assert (run / "report" / "report.md").exists() and "bits/byte" in result.stdout
