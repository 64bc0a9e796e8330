"""``langadapt report RUN_DIR``: every table from the run's own records, numbers as in the results files,
valid PNG plots, partial runs, markdown-safe samples, rebuilt on rerun, one-line errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from langadapt import config as C
from langadapt.cli import main
from langadapt.errors import UserError
from langadapt.runs import is_done, run_stage, work_folder
from langadapt.stages import BY_NAME, Stage

HOSTILE = 'a | b\n<script>alert(1)</script> *not bold* `x` [link](http://e.x) $x$'
MODELS = ["base", "init", "pretrain"]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def _stage(run: Path, name: str, seconds: float, **figures) -> Path:
    folder = run / BY_NAME[name].folder if name in BY_NAME else run / "eval-samples"
    _write(folder / "stage.json", {"stage": name, "langadapt_version": "0.1.0", "git_commit": "0123456789abcdef",
                                   "seconds": seconds, "config": {}, **figures})  # fmt: skip
    (folder / "DONE").write_text("2025-01-01T00:00:00\n")
    return folder


def _fert(tpw: float, bpt: float, docs: int = 10) -> dict:
    return {"docs": docs, "words": 1000, "tokens": int(1000 * tpw), "tokens_per_word": tpw, "bytes_per_token": bpt}


def _corpus(bpb: float, tpw: float) -> dict:
    return {"bpb": bpb, "tokens_per_word": tpw, "nats": 100.0, "bytes": 1234, "tokens": 300, "words": 90, "docs": 4,
            "doc_start": "<|endoftext|>", "doc_start_rule": "document separator", "max_len": 64, "stride": 32,
            "bf16": False}  # fmt: skip


def _direction(chrf: float, p: float | None) -> dict:
    d = {"n": 3, "chrf++": chrf, "chrf++_ci95": [chrf - 2.5, chrf + 3.25], "chrf": chrf + 1, "chrf_ci95": [chrf - 1, chrf + 4],
         "bleu": chrf / 10, "bleu_ci95": [chrf / 20, chrf / 5], "truncation_rate": 1 / 3, "off_target_rate": 0.0,
         "max_new_tokens": {"min": 9, "max": 20, "mean": 14.5}}  # fmt: skip
    if p is not None:
        d.update({"chrf++_p_vs_first": p, "chrf_p_vs_first": p, "bleu_p_vs_first": p})
    return d


def _choice_model(label: str, acc: float, p: float | None) -> dict:
    m = {"label": label, "model": f"/m/{label}", "n": 20, "chance": 0.25}
    for k, v in (("acc", acc), ("acc_norm", acc + 0.05), ("acc_bytes", acc - 0.05)):
        m.update({k: v, f"{k}_ci95": [v - 0.2, v + 0.2], f"{k}_stderr": 0.1})
        if p is not None:
            m[f"{k}_p_vs_first"] = p
    return m


def make_run(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """A finished run's records in the real formats (small numbers, written by hand)."""
    run = root / "fx"
    run.mkdir(parents=True)
    if "recipe" not in skip:
        _write(run / "recipe.yaml", "langadapt_version: 0.1.0\nname: fx\nnote: '```'\neval: {}\n")
    if "extend" not in skip:
        tok = _stage(run, "extend", 2.5)
        fert = {k: {"before": _fert(b, 2.0), "after": _fert(a, 4.5)} for k, b, a in
                (("target", 4.25, 1.8085), ("target_heldout", 4.1459, 1.763), ("english", 1.6289, 1.6289),
                 ("english_heldout", 1.5434, 1.5434))}  # fmt: skip
        _write(tok / "extension.json", {"base_vocab_size": 600, "added": 60, "new_vocab_size": 660,
                                        "english_heldout_changed": {"changed": 0, "docs": 10}, "fertility": fert})  # fmt: skip
    if "sweep" not in skip:
        rows = [{"size": s, "added": s, "target": {"tokens_per_word": t, "tokens_per_char": 0.3, "bytes_per_token": 3.0},
                 "english": {"tokens_per_word": 1.55, "tokens_per_char": 0.3, "bytes_per_token": 3.9}}
                for s, t in ((0, 4.2), (500, 2.6), (1000, 2.2), (2000, 2.0), (4000, 1.9))]  # fmt: skip
        _write(_stage(run, "sweep", 30.0) / "sweep.json", {"base": "b", "heldout_every": 10, "threshold": 0.1,
                                                           "suggested_size": 1000, "curve_still_falling": False,
                                                           "rows": rows})  # fmt: skip
    if "eval" not in skip:
        models = [{"label": label, "model": f"/m/{label}", "target": _corpus(b, t), "english": _corpus(e, 1.5)}
                  for label, b, t, e in (("base", 2.2328803952, 4.24, 0.9064), ("init", 2.0619, 1.87, 0.9071),
                                         ("pretrain", 1.5683650207, 1.87, 0.8151))]  # fmt: skip
        _write(_stage(run, "eval", 12.0) / "metrics.json", {"models": models, "docs": {"target": 4, "english": 4}})
    if "pretrain" not in skip:
        pre = _stage(run, "pretrain", 61.25, steps=6, planned_steps=6, tokens=768, tokens_per_s=12.6,
                     trainable_params=1000, total_params=2000, trainable="full", final={"weights": "best", "step": 6})
        lines = [{"step": i, "total": 6, "loss": 6 - 0.5 * i, "lr": 1e-3, "grad_norm": 1.0, "tokens": 128 * i,
                  "seconds": 1.0, "tokens_per_s": 128.0, "mfu": None} for i in range(1, 7)]  # fmt: skip
        lines.insert(3, {"kind": "eval", "step": 3, "target_bpb": 2.5, "english_bpb": 1.1, "seconds": 0.5})
        lines.append({"kind": "eval", "step": 6, "target_bpb": 2.1, "english_bpb": 1.05, "seconds": 0.5})
        _write(pre / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    if "distill" not in skip:
        _stage(run, "distill", 7.0, seconds_per_stage={"distill": 4.0, "calibrate": 2.0},
               loss={"distill": {"first": 1.2, "last": 0.8}, "calibrate": {"first": 7.7, "last": 7.4}},
               losses={"distill": [1.2, 1.0, 0.9, 0.8], "calibrate": [7.7, 7.5, 7.4]})  # fmt: skip
    if "translate" not in skip:
        tr = _stage(run, "translate", 20.0)
        models = [{"label": "base", "model": "/m/base", "directions": {"en-hu": _direction(8.2589594, None),
                                                                       "hu-en": _direction(14.6967, None)}},
                  {"label": "pretrain", "model": "/m/pretrain", "directions": {"en-hu": _direction(17.1211, 0.001),
                                                                               "hu-en": _direction(14.2231, 0.33)}}]  # fmt: skip
        _write(tr / "results.json", {
            "src": "en", "tgt": "hu", "items": 3, "n_shots": 2,
            "template": {"shot": "{src_text} = {tgt_text}", "separator": "\n\n", "query": "{src_text} ="},
            "bootstrap": {"resamples": 1000, "seed": 0, "ci95": "2.5 and 97.5 percentiles",
                          "p_vs_first": "paired bootstrap resampling"}, "models": models})  # fmt: skip
        samples = [{"model": m, "direction": d, "item": i, "prompt": f"Shot one. = Egy.\n\nSource {i} {d}. =",
                    "output": HOSTILE if m == "pretrain" else f"out {i}", "reference": f"Ref {i}",
                    "max_new_tokens": 12, "truncated": m == "base"}
                   for m in ("base", "pretrain") for d in ("en-hu", "hu-en") for i in range(4)]  # fmt: skip
        _write(tr / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    if "choice" not in skip:
        _write(_stage(run, "choice", 9.5) / "results.json", {
            "items": 20, "scoring": {"acc": "argmax of the summed log-probability", "ci95": "normal approximation",
                                     "p_vs_first": "two-sided exact McNemar test"},
            "models": [_choice_model("base", 0.25, None), _choice_model("pretrain", 0.6, 0.0123)]})  # fmt: skip
    if "samples" not in skip:
        prompts = [{"lang": "hu", "prompt": "A LibreOffice | Calc"}, {"lang": "en", "prompt": "To insert <b>"}]
        _write(_stage(run, "samples", 3.0) / "results.json", {
            "prompts": prompts, "max_new_tokens": 16, "generation": "greedy",
            "models": [{"label": label, "model": f"/m/{label}", "distinct_bigrams_mean": 0.5, "prompt_language_share": 1.0,
                        "samples": [{**p, "output": HOSTILE if label == "pretrain" else "plain", "truncated": False,
                                     "output_lang": p["lang"]} for p in prompts]}
                       for label in ("base", "pretrain")]})  # fmt: skip
    if "speed" not in skip:
        _write(_stage(run, "speed", 40.0) / "results.json", speed_results())
    if "export" not in skip:
        ex = _stage(run, "export", 30.0, gguf="model-f16.gguf", outtype="f16", size_bytes=3 * 2**20,
                    export_seconds=12.5, pre_tokenizer="smollm", verified=True, verification={"status": "verified"})
        _write(ex / "verify.json", {
            "outtype": "f16", "ok": True, "failures": [],
            "tokenization": {"documents": 26, "tokens": 5000, "mismatches": 0, "target": {"documents": 12}},
            "bpb": {"target": {"llama_cpp": 2.23301, "transformers": 2.2328803952, "relative_diff": 0.0000581},
                    "english": {"llama_cpp": 0.9065, "transformers": 0.9064, "relative_diff": 0.00011},
                    "max_relative_diff": 0.00011, "tolerance": 0.005, "within_tolerance": True, "required": True},
            "greedy": {"prompts": 4, "agree": 3, "max_new_tokens": 32, "required": False}})  # fmt: skip
    return run


def _speed(words_per_s: float, steps: float) -> dict:
    return {"prompts": 2, "words": 96, "tokens": int(96 * steps), "seconds": 96 / words_per_s,
            "words_per_s": words_per_s, "tokens_per_s": words_per_s * steps, "steps_per_word": steps,
            "generated_tokens_per_word": steps - 0.1, "capped": 0}  # fmt: skip


def speed_results() -> dict:
    """eval speed's results.json: base and pretrain in transformers and llama.cpp, target and English."""
    models = [{"label": "base", "model": "/m/base", "heldout": {"target": {"tokens_per_word": 4.24},
                                                             "english": {"tokens_per_word": 1.5}},
               "runtimes": {"transformers": {"target": _speed(8.125, 4.3), "english": _speed(20.0, 1.5)},
                            "llamacpp": {"target": _speed(20.0, 4.3), "english": _speed(50.0, 1.5)}}},
              {"label": "pretrain", "model": "/m/pretrain", "heldout": {"target": {"tokens_per_word": 1.87},
                                                                       "english": {"tokens_per_word": 1.5}},
               "runtimes": {"transformers": {"target": _speed(16.25, 1.9), "english": _speed(19.0, 1.5)},
                            "llamacpp": {"target": _speed(40.0, 1.9), "english": _speed(47.5, 1.5)}}}]  # fmt: skip
    from langadapt.eval.speed import comparisons

    return {"settings": {"words": 48, "prompt_words": 12, "per_language": 2, "threads": 4, "device": "cpu",
                         "repeats": 3},
            "prompts": [{"corpus": "target", "lang": "hu", "prompt": "A LibreOffice | Calc"}],
            "runtimes": {"transformers": {"status": "measured", "reason": None},
                         "llamacpp": {"status": "measured", "reason": None}},
            "models": models, "comparisons": comparisons(models)}  # fmt: skip


def report_of(run: Path) -> str:
    main(["report", str(run)])
    return (run / "report" / "report.md").read_text(encoding="utf-8")


def section(report: str, title: str) -> str:
    return report.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text`` (split at pipes that are not escaped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


TITLES = ("Headline", "Tokenizer: fertility", "Tokenizer: sweep", "Bits per byte", "Training", "Translation",
          "Multiple choice", "Translation samples", "Samples", "Generation speed", "GGUF export", "Stage timings",
          "Recipe")  # fmt: skip


def test_every_table_and_valid_pngs(tmp_path, capsys):
    import matplotlib.image

    run = make_run(tmp_path)
    report = report_of(run)
    assert [t for t in TITLES if f"\n## {t}\n" not in report] == []
    plots = sorted((run / "report" / "plots").glob("*.png"))
    names = {p.name for p in plots}
    assert names == {"fertility.png", "sweep.png", "bpb.png", "pretrain_loss.png", "pretrain_eval_bpb.png",
                     "distill_loss.png", "translation.png", "choice.png", "speed.png"}  # fmt: skip
    assert set(re.findall(r'<img src="plots/([^"]+)"', report)) == names
    for png in plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(png).shape[:2]
        assert width == 1400 and height > 500, png.name  # 7 in at 200 dpi, shown 700 px wide
    out = capsys.readouterr().out
    assert "target bits/byte" in out and str(run / "report" / "report.md") in out
    assert "`eval/metrics.json`" in section(report, "Bits per byte")  # every table names its file
    assert "````yaml\n" in section(report, "Recipe")  # the recipe holds ```: a longer fence


def test_numbers_are_the_results_files(tmp_path):
    run = make_run(tmp_path)
    report = report_of(run)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    bpb_rows = {r[0]: r for r in table_rows(section(report, "Bits per byte"))[1:]}
    for m in metrics["models"]:
        row = bpb_rows[m["label"]]
        assert [float(c) for c in row[1:]] == [round(m[c][k], 3) for c in ("target", "english")
                                              for k in ("bpb", "tokens_per_word")]  # fmt: skip
    head = {r[0]: r for r in table_rows(section(report, "Headline"))[1:]}
    base, last = metrics["models"][0]["target"]["bpb"], metrics["models"][-1]["target"]["bpb"]
    assert head["target bits/byte"][1:4] == [f"{base:.3f}", f"{last:.3f}",
                                             f"{last - base:+.3f} ({(last - base) / base * 100:+.1f}%)"]  # fmt: skip
    assert head["en→hu chrF++"][1:6] == ["8.26", "17.12", "+8.86 (+107.3%)", "0.001", "yes"]
    assert head["multiple-choice acc"][1:6] == ["0.250", "0.600", "+0.350 (+140.0%)", "0.012", "yes"]
    translation = {(r[0], r[1]): r for r in table_rows(section(report, "Translation"))[1:]}
    assert translation[("pretrain", "hu→en")][3:6] == ["14.22 [11.72, 17.47]", "0.330", "no"]
    assert translation[("base", "en→hu")][4:6] == ["—", "baseline"]
    choice = {r[0]: r for r in table_rows(section(report, "Multiple choice"))[1:]}
    assert choice["pretrain"][2:5] == ["0.600 [0.400, 0.800]", "0.012", "yes"]
    fert = {r[0]: r for r in table_rows(section(report, "Tokenizer: fertility"))[1:]}
    assert fert["target, training"][3:5] == ["4.250", "1.808"]  # 1.8085 in the file
    timings = {r[0]: r for r in table_rows(section(report, "Stage timings"))[1:]}
    assert timings["pretrain"][2] == "61.2" and timings["**total**"][2] == "**215.2**"  # 61.25, 215.25
    evals = table_rows(section(report, "Training").split("Evaluations during training", 1)[1].split("###")[0])
    assert evals[1:] == [["3", "384", "2.500", "1.100"], ["6", "768", "2.100", "1.050"]]


def test_samples_are_escaped_markdown(tmp_path):
    report = report_of(make_run(tmp_path))
    for title in ("Translation samples", "Samples"):
        text = section(report, title)
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert r"a \| b<br>" in text and r"\*not bold\*" in text and r"\[link\]" in text and r"\$x\$" in text
        for row in table_rows(text):
            if any("script" in cell for cell in row):
                assert len(row) == 2, row  # the output's pipe did not open a column
    samples = section(report, "Translation samples")
    assert samples.count("**en→hu, item") == 3  # translation_samples defaults to 3 of the 4 items
    assert "| source | Source 0 en-hu. |" in samples and "base (cut at 12 tokens)" in samples
    assert "**Prompt 1** (hu): A LibreOffice \\| Calc" in section(report, "Samples")


def test_a_run_missing_stages_reports_what_it_has(tmp_path):
    run = make_run(tmp_path, skip=("sweep", "pretrain", "distill", "translate", "choice", "samples", "recipe",
                                   "speed", "export"))  # fmt: skip
    report = report_of(run)
    present = [t for t in TITLES if f"\n## {t}\n" in report]
    assert present == ["Headline", "Tokenizer: fertility", "Bits per byte", "Stage timings"]
    assert {p.name for p in (run / "report" / "plots").glob("*.png")} == {"fertility.png", "bpb.png"}
    run2 = make_run(tmp_path / "only-tok", skip=("sweep", "eval", "pretrain", "distill", "translate", "choice",
                                                 "samples", "speed", "export"))  # fmt: skip
    head = table_rows(section(report_of(run2), "Headline"))  # tokens/word from the tokenizer alone
    assert head[1][:3] == ["target tokens/word", "4.146", "1.763"]


def test_a_finished_report_is_rebuilt_not_skipped_or_refused(tmp_path, capsys):
    run = make_run(tmp_path)
    main(["report", str(run)])
    stamp = (run / "report" / "DONE").stat().st_mtime_ns
    (run / "eval-choice" / "results.json").unlink()
    main(["report", str(run), "--significance", "0.2"])  # another config: replaced too
    assert (run / "report" / "DONE").stat().st_mtime_ns != stamp
    assert "## Multiple choice" not in (run / "report" / "report.md").read_text()
    assert "skipped" not in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_report_command_errors_are_one_line_exit_2(tmp_path):
    def langadapt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "langadapt.cli", *args], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    missing = langadapt("report", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "no such run folder" in missing.stderr
    assert not (tmp_path / "nope").exists()
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "notes.txt").write_text("hi")
    bad = langadapt("report", str(tmp_path / "not-a-run"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not a langadapt run" in bad.stderr
    assert sorted(p.name for p in (tmp_path / "not-a-run").iterdir()) == ["notes.txt"]
    ok = langadapt("report", str(make_run(tmp_path)))
    assert ok.returncode == 0, ok.stderr
    assert "report:" in ok.stdout


def test_an_existing_report_folder_that_is_not_a_report_is_refused(tmp_path):
    run = make_run(tmp_path)
    (run / "report").mkdir()
    with pytest.raises(UserError, match="not a finished langadapt stage"):
        run_stage(BY_NAME["report"], C.ReportConfig(run_dir=str(run)), run / "report")


def test_a_recipe_with_an_eval_section_ends_with_the_report(tmp_path):
    from langadapt.pipeline import plan

    stages = plan(C.Recipe(name="x", runs_dir=str(tmp_path), translate=C.TranslateConfig()))
    assert [s.name for s in stages] == ["translate", "report"] and not stages[-1].skipped
    assert stages[-1].config.run_dir == str(tmp_path / "x") and stages[-1].out == tmp_path / "x" / "report"
    assert [s.name for s in plan(C.Recipe(name="y", extend=C.ExtendConfig()))] == ["extend"]
    report = C.ReportConfig(translation_samples=1)
    assert plan(C.Recipe(name="z", report=report))[-1].config is report  # a report: section alone


def test_a_recipe_with_a_speed_section_compares_base_and_final_and_ends_with_the_report(tmp_path):
    from langadapt.pipeline import plan

    recipe = C.Recipe(name="s", runs_dir=str(tmp_path), init=C.InitConfig(), pretrain=C.PretrainConfig(),
                      speed=C.SpeedConfig(), data=C.DataConfig(target_valid=["hu.jsonl"]))  # fmt: skip
    stages = {s.name: s for s in plan(recipe)}
    assert list(stages)[-2:] == ["speed", "report"] and stages["speed"].out == tmp_path / "s" / "eval-speed"
    assert stages["speed"].config.models == [recipe.base_model, str(tmp_path / "s" / "pretrain" / "final")]
    assert stages["speed"].config.target == ["hu.jsonl"] and stages["speed"].config.tgt == "hu"


# ---------------------------------------------------------------------------------- generation speed


def test_speed_section_and_headline_are_the_results_file(tmp_path):
    run = make_run(tmp_path)
    report = report_of(run)
    results = json.loads((run / "eval-speed" / "results.json").read_text())
    rows = {(r[0], r[1], r[2]): r for r in table_rows(section(report, "Generation speed"))[1:]}
    assert len(rows) == 8  # 2 runtimes x 2 languages x 2 models
    by_label = {m["label"]: m for m in results["models"]}
    compared = {(c["runtime"], c["corpus"]): c for c in results["comparisons"]}
    names = {"transformers": "transformers", "llamacpp": "llama.cpp"}
    texts = {"target": "target", "english": "English"}
    for (runtime, corpus), c in compared.items():
        row = rows[(names[runtime], texts[corpus], "pretrain")]
        got = by_label["pretrain"]["runtimes"][runtime][corpus]
        assert row[3:7] == [f"{got['words_per_s']:.1f}", f"{by_label['pretrain']['heldout'][corpus]['tokens_per_word']:.3f}",
                            f"{got['generated_tokens_per_word']:.3f}", f"{got['steps_per_word']:.3f}"]  # fmt: skip
        assert row[7:10] == [f"{c['ratio']:.2f}", f"{c['limit']:.2f}", f"{c['closeness']:.2f}"]
        assert rows[(names[runtime], texts[corpus], "base")][7:10] == ["—", "—", "—"]  # the reference
    target = compared[("transformers", "target")]
    assert (target["ratio"], round(target["limit"], 2), round(target["closeness"], 2)) == (2.0, 2.27, 0.88)
    head = {r[0]: r for r in table_rows(section(report, "Headline"))[1:]}
    assert head["target words/s, transformers"][1:4] == ["8.1", "16.2", "+8.1 (+100.0%)"]
    assert head["English words/s, llama.cpp"][1:4] == ["50.0", "47.5", "-2.5 (-5.0%)"]
    assert '<img src="plots/speed.png"' in section(report, "Generation speed")


def test_speed_section_says_why_a_runtime_was_not_measured(tmp_path):
    run = make_run(tmp_path, skip=("speed",))
    results = speed_results()
    for m in results["models"]:
        del m["runtimes"]["llamacpp"]
    results["runtimes"]["llamacpp"] = {"status": "skipped", "reason": "no llama.cpp runtime library found"}
    results["comparisons"] = [c for c in results["comparisons"] if c["runtime"] == "transformers"]
    _write(_stage(run, "speed", 1.0) / "results.json", results)
    text = section(report_of(run), "Generation speed")
    assert "- llama.cpp not measured: no llama.cpp runtime library found." in text
    assert {r[0] for r in table_rows(text)[1:]} == {"transformers"}


# ---------------------------------------------------------------------------------------- GGUF export


def test_export_section_lists_the_llama_cpp_checks(tmp_path):
    run = make_run(tmp_path)
    text = section(report_of(run), "GGUF export")
    assert "`model-f16.gguf`, f16, 3.0 MiB" in text and "**verified**" in text
    rows = {r[0]: r for r in table_rows(text)[1:]}
    assert rows["tokenization, id for id"][1:] == ["0 of 26 texts differ (5,000 tokens)", "none differ", "pass"]
    assert rows["bits per byte, target"][1:] == ["llama.cpp 2.233, transformers 2.233 (0.006% apart)",
                                                 "within 0.50%", "pass"]  # fmt: skip
    assert rows["greedy continuations (32 tokens)"][1:] == ["3 of 4 prompts agree", "reported (required of f32)",
                                                            "reported"]  # fmt: skip
    assert "`export/stage.json`, `export/verify.json`" in text


def test_export_section_reads_verify_json_defensively(tmp_path):
    run = make_run(tmp_path)
    _write(run / "export" / "verify.json", {"tokenization": {"mismatches": "?", "documents": None},
                                            "bpb": {"target": {"relative_diff": "x"}, "tolerance": None},
                                            "greedy": [1, 2], "failures": ["tokenization differs on 2 of 9 texts"]})  # fmt: skip
    text = section(report_of(run), "GGUF export")
    rows = {r[0]: r for r in table_rows(text)[1:]}
    assert rows["tokenization, id for id"][3] == "—" and rows["bits per byte, target"][3] == "—"
    assert "greedy continuations" not in text and "- failed: tokenization differs on 2 of 9 texts" in text
    (run / "export" / "verify.json").unlink()  # exported without a runtime: no checks, said so
    text = section(report_of(run), "GGUF export")
    assert "No verify.json" in text and not table_rows(text)


# ------------------------------------------------------------------------------------ training plot


def test_smoothing_is_a_bias_corrected_causal_ema():
    from langadapt.eval.report_plots import smooth, smoothing_span

    assert smooth([5.0, 5.0, 5.0, 5.0], 4) == pytest.approx([5.0] * 4)  # no pull toward 0 at the start
    assert smooth([1.0, 3.0], 3) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])  # b = 0.5
    assert smooth([4.0, 2.0, 7.0], 1) == [4.0, 2.0, 7.0]
    values = [5.3, 5.9, 4.8, 5.1, 4.7, 4.9, 4.4]
    changed = smooth([*values[:4], 99.0, *values[5:]], 3)
    assert changed[:4] == smooth(values, 3)[:4]  # causal: a later spike does not move earlier points
    noisy = smooth(values, 3)
    assert max(noisy) - min(noisy) < max(values) - min(values)  # smoother than the data
    got = smooth([1.0, float("nan"), 3.0], 3)
    assert math.isnan(got[1]) and got[2] == pytest.approx(smooth([1.0, 3.0], 3)[1])  # a diverged step skipped
    assert (smoothing_span(3), smoothing_span(6), smoothing_span(30), smoothing_span(1000)) == (1, 2, 8, 250)


def test_training_plot_draws_smoothed_loss_and_eval_points(tmp_path, monkeypatch):
    from langadapt.eval import report_plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    xs, losses = [128 * i for i in range(1, 13)], [6.0, 5.1, 5.8, 4.9, 5.5, 4.6, 5.2, 4.4, 5.0, 4.3, 4.8, 4.1]
    plots.training_loss(xs, losses, {"target": ([0, 768, 1536], [2.5, 2.2, 2.0])}, tmp_path / "x.png")
    lines = {line.get_label(): line for ax in figures[0].axes for line in ax.get_lines()}
    assert list(lines["training loss, per step"].get_ydata()) == losses
    assert lines["training loss, per step"].get_alpha() < 0.5  # the raw points are faint
    smoothed = lines[f"smoothed (EMA over ~{plots.smoothing_span(12)} steps)"]
    assert list(smoothed.get_ydata()) == pytest.approx(plots.smooth(losses, plots.smoothing_span(12)))
    evals = lines["target bits/byte (held-out)"]
    assert [list(p) for p in evals.get_xydata()] == [[0, 2.5], [768, 2.2], [1536, 2.0]]
    assert evals.axes is not smoothed.axes and evals.axes.get_ylabel() == "held-out bits per byte"  # own axis


def test_the_report_loss_plot_gets_the_eval_records(tmp_path, monkeypatch):
    from langadapt.eval import report_plots as plots

    calls = []
    real = plots.training_loss
    monkeypatch.setattr(plots, "training_loss", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = report_of(make_run(tmp_path))
    xs, losses, evals = calls[0][:3]
    assert xs == [128 * i for i in range(1, 7)] and losses == [6 - 0.5 * i for i in range(1, 7)]
    assert evals == {"target": ([384, 768], [2.5, 2.1]), "English": ([384, 768], [1.1, 1.05])}
    assert "squares: held-out bits per byte where it was measured (right axis)" in section(report, "Training")


# ---------------------------------------------------------------------------- the runner's rebuild flag


def _count_entry(cfg, work: Path) -> dict:
    (work / "n.txt").write_text(str(cfg.translation_samples))
    return {"n": cfg.translation_samples}


def test_runner_replaces_a_finished_rebuild_stage(tmp_path):
    stage = Stage("report", "test rebuild", "r", C.ReportConfig, "test_report:_count_entry", "toy", rebuild=True)
    out = tmp_path / "r"
    run_stage(stage, C.ReportConfig(translation_samples=1), out)
    record = run_stage(stage, C.ReportConfig(translation_samples=2), out)
    assert "skipped" not in record and record["n"] == 2 and (out / "n.txt").read_text() == "2"
    assert is_done(out) and not work_folder(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_loss_plot_takes_before_and_after_bpb_from_eval_when_training_measured_none(tmp_path):
    from langadapt.eval import report_sections as sections

    record = {"config": {"model": str(tmp_path / "distill")}}
    bpb = {"models": [{"label": "base", "model": "smollm2-135m", "target": {"bpb": 2.2}},
                      {"label": "distill", "model": str(tmp_path / "distill"), "target": {"bpb": 2.0},
                       "english": {"bpb": 0.9}},
                      {"label": "pretrain", "model": str(tmp_path / "pretrain" / "final"), "target": {"bpb": 1.6},
                       "english": {"bpb": 0.8}}]}  # fmt: skip
    points = sections._before_and_after(record, bpb, 61440)
    assert points == {"target": ([0, 61440], [2.0, 1.6]), "English": ([0, 61440], [0.9, 0.8])}
    assert sections._before_and_after(record, {"models": bpb["models"][:2]}, 61440) == {}  # no final weights scored
    assert sections._before_and_after(None, bpb, 61440) == {}
