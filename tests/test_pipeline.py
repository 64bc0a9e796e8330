"""`langadapt run`: every stage of a recipe on a tiny model, the report, and skip-on-rerun.

The corpora keep their text in a field named ``content``: the data section's text_field must reach
every stage that reads text (prepare, extend, init's KL probe, distill, pack, pretrain's evaluation, eval).
"""

from __future__ import annotations

import json

import pytest
import tiny

from langadapt.cli import main

RECIPE = """
name: tiny
base_model: {model}
target_lang: hu
runs_dir: {runs}
{data}prepare:
  language_id: false
  minhash_dedup: false
extend:
  num_new_tokens: 60
init: {{}}
distill:
  steps: 2
  calibrate_steps: 1
  batch_size: 2
  seq_len: 32
  bf16: false
pack:
  ratio: 0.75
  seq_len: 64
  tokens: 2048
  workers: 1
pretrain:
  train: new-embeddings,layers
  lr: 1.0e-3
  micro_batch: 2
  max_steps: 3
  bf16: false
  eval_max_docs: 4
eval:
  max_docs: 4
  max_len: 64
  stride: 32
make_choice:
  max_items: 6
choice: {{}}
translate:
  shots: 2
  max_items: 3
samples:
  per_language: 1
  max_new_tokens: 4
"""


@pytest.fixture()
def recipe(tmp_path, tiny_tied, hu_texts, en_texts):
    data = tiny.recipe_corpora(tmp_path, hu_texts, en_texts, field="content")
    pairs = [{"en": e[:80], "hu": h[:80], "split": "train" if i < 4 else "valid"}
             for i, (e, h) in enumerate(zip(en_texts[220:236], hu_texts[220:236]))]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    data += "  parallel: pairs.jsonl\n"
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(model=tiny_tied, runs=tmp_path / "runs", data=data))
    return path


def test_recipe_runs_every_stage_then_skips_them(recipe, tmp_path, capsys):
    main(["run", str(recipe)])
    run = tmp_path / "runs" / "tiny"
    stages = ["corpus", "tokenizer", "model", "distill", "packed", "pretrain", "eval"]
    assert all((run / s / "DONE").exists() for s in stages)
    assert "langadapt_version" in (run / "recipe.yaml").read_text()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert [m["label"] for m in metrics["models"]] == ["base", "init", "distill", "pretrain"]
    for m in metrics["models"]:
        assert m["target"]["bpb"] > 0 and m["english"]["bpb"] > 0
    # English tokenizes as before (the English train text is the extension's reference)
    assert metrics["models"][0]["english"]["tokens"] == metrics["models"][-1]["english"]["tokens"]
    assert metrics["models"][-1]["target"]["tokens"] < metrics["models"][0]["target"]["tokens"]
    choice = json.loads((run / "eval-choice" / "results.json").read_text())
    # the task evaluations compare the base model with the final one; bpb covers every model
    final = [metrics["models"][0]["model"], metrics["models"][-1]["model"]]
    assert [m["model"] for m in choice["models"]] == final and all(m["n"] == 6 for m in choice["models"])
    translate = json.loads((run / "eval-translate" / "stage.json").read_text())
    assert translate["config"]["tgt"] == "hu" and translate["config"]["models"] == final
    for stage in [*stages, "eval-samples"]:
        config = json.loads((run / stage / "stage.json").read_text())["config"]
        assert config.get("text_field", "content") == "content", stage
    samples = json.loads((run / "eval-samples" / "results.json").read_text())
    assert [p["lang"] for p in samples["prompts"]] == ["hu", "en"] and len(samples["models"]) == 2
    report = (run / "report" / "report.md").read_text()
    for title in ("Headline", "Tokenizer: fertility", "Bits per byte", "Training", "Translation",
                  "Multiple choice", "Translation samples", "Samples", "Stage timings", "Recipe"):
        assert f"## {title}\n" in report, title
    assert (run / "report" / "plots" / "bpb.png").exists() and (run / "report" / "DONE").exists()
    out = capsys.readouterr().out
    assert "bits/byte" in out and "report/report.md" in out

    stamps = {s: (run / s / "DONE").stat().st_mtime_ns for s in stages}
    report_stamp = (run / "report" / "DONE").stat().st_mtime_ns
    main(["run", str(recipe)])
    assert {s: (run / s / "DONE").stat().st_mtime_ns for s in stages} == stamps
    assert (run / "report" / "DONE").stat().st_mtime_ns != report_stamp  # the report is rebuilt, not skipped
    out = capsys.readouterr().out
    assert "done, skipped" in out and "[report] running" in out


def test_dry_run_writes_nothing(recipe, tmp_path, capsys):
    main(["run", str(recipe), "--dry-run"])
    assert "[pretrain] would run" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_a_finished_stage_of_another_config_is_refused_before_any_work(recipe, tmp_path, capsys):
    main(["run", str(recipe)])
    capsys.readouterr()
    recipe.write_text(recipe.read_text().replace("max_steps: 3", "max_steps: 4"))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(recipe), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert "pretrain run of another config (changed: max_steps)" in err
