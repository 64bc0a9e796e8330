"""`langadapt demo` and `langadapt demo --chat` end to end on the real SmolLM2-135M (about 10 and 8.5
minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(runs: Path, *flags: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "langadapt.cli", "demo", "--runs-dir", str(runs), *flags],
        capture_output=True, text=True, timeout=3000, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result, (time.perf_counter() - started) / 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One runs folder for both demos: the chat demo continues the base demo's run."""
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def base_demo(runs) -> tuple[subprocess.CompletedProcess, float]:
    """The base demo, run once per module: the chat demo's test run alone makes it first."""
    return _demo(runs)


def test_demo_adapts_smollm2_to_hungarian(runs, base_demo):
    result, minutes = base_demo
    run = runs / "demo-hu"
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
    # Task evaluations: measured for the base and the final model in one run, whichever way they move.
    translate = json.loads((run / "eval-translate" / "results.json").read_text())
    assert [m["label"] for m in translate["models"]] == ["base", "pretrain"]
    for m in translate["models"]:
        assert set(m["directions"]) == {"en-hu", "hu-en"}
        assert all(0 <= d["chrf++"] <= 100 and d["n"] == translate["items"] for d in m["directions"].values())
    assert "chrf++_p_vs_first" in translate["models"][1]["directions"]["en-hu"]
    choice = json.loads((run / "eval-choice" / "results.json").read_text())
    assert [m["label"] for m in choice["models"]] == ["base", "pretrain"] and choice["items"] > 0
    samples = json.loads((run / "eval-samples" / "results.json").read_text())
    assert {p["lang"] for p in samples["prompts"]} == {"hu", "en"}
    report = (run / "report" / "report.md").read_text()
    for title in ("Headline", "Translation", "Multiple choice", "Samples", "Stage timings"):
        assert f"## {title}\n" in report, title
    assert "report/report.md" in result.stdout and "chrF++" in result.stdout
    # The 10-minute budget is measured in bench/RESULTS.md, not asserted here (CI's cores may be shared).


def test_chat_demo_stops_the_adapted_model_looping(runs, base_demo):
    """The issue's targets for the chat model: chat translations better than the original Instruct
    model's and in the target language more often than the adapted model's, answers that repeat
    themselves less, English held, DPO preferring the chosen answers it trained on. Run alone, the
    ``base_demo`` fixture makes the base demo's run first."""
    result, minutes = _demo(runs, "--chat")
    run = runs / "demo-hu"
    print(f"chat demo took {minutes:.1f} min")
    assert "[pretrain] done, skipped" in result.stdout + result.stderr  # the base demo's stages are reused
    models = {m["label"]: m for m in json.loads((run / "eval-chat" / "results.json").read_text())["models"]}
    assert list(models) == ["base", "pretrain", "sft", "dpo"]
    base, before, chat = models["base"], models["pretrain"], models["dpo"]
    # Not "chrF++ above the adapted model's": that model mostly echoes the English source (off target), and
    # chrF++ credits an echo through the names it shares with the reference (IMSIN, LibreOffice Basic).
    assert chat["translation"]["chrf++"] > base["translation"]["chrf++"]
    assert chat["translation"]["off_target_rate"] < before["translation"]["off_target_rate"]
    assert chat["prompts"]["distinct_bigrams_mean"] > before["prompts"]["distinct_bigrams_mean"] + 0.1
    assert chat["prompts"]["distinct_bigrams_mean"] >= 0.9 * base["prompts"]["distinct_bigrams_mean"]
    assert chat["english"]["bpb"] <= 1.03 * before["english"]["bpb"]
    dpo = json.loads((run / "dpo" / "stage.json").read_text())
    assert dpo["reward_accuracy_after"] > dpo["reward_accuracy_before"]
    assert dpo["reference_vocab_rows"] > 49152  # the reference has the extended vocabulary (SmolLM2: 49152)
    assert "## Chat\n" in (run / "report" / "report.md").read_text()
