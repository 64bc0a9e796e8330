"""corpus prepare from the command line: bad input is one line on stderr, exit code 2, nothing written;
a finished run is skipped or, with another config, refused; the summary names the shards."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from langadapt.cli import main
from langadapt.config import PrepareConfig
from langadapt.corpus.prepare import scratch_dir
from langadapt.runs import STARTED_JSON, to_jsonable, work_folder


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["corpus", "prepare", *args])
    return exc.value.code, capsys.readouterr().err


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return tiny.write_jsonl(tmp_path / "hu.jsonl", tiny.demo_texts("hu", n=20))


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "image.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path


def _not_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip data at all")
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_match", "no file matches"),
        ("binary", "image.txt: not UTF-8 text"),
        ("not_gzip", "cannot read"),
        ("unknown_lang", "unknown language code 'xx'"),
        ("other_run", "not a finished langadapt stage"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(case: str, expected: str, tmp_path: Path, good: Path,
                                                   capsys) -> None:  # fmt: skip
    out = tmp_path / "out"
    inputs, lang = [str(good)], "hu"
    if case == "no_match":
        inputs = [str(tmp_path / "nothing-*.jsonl")]
    elif case == "binary":
        inputs = [str(good), str(_binary(tmp_path))]
    elif case == "not_gzip":
        inputs = [str(_not_gzip(tmp_path))]
    elif case == "unknown_lang":
        lang = "xx"
    elif case == "other_run":
        (out / "shards").mkdir(parents=True)
        with gzip.open(out / "shards" / "00000.jsonl.gz", "wt") as fh:
            fh.write('{"text": "from an earlier run"}\n')
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    code, err = run_cli(["--input", *inputs, "--lang", lang, "--out", str(out)], capsys)

    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing half-written
    assert not work_folder(out).exists() and not scratch_dir(out).exists()


def test_language_py3langid_cannot_identify(tmp_path: Path, good: Path, capsys) -> None:
    code, err = run_cli(["--input", str(good), "--lang", "yi", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "language_id" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hu.jsonl"]


def test_unfinished_run_with_other_settings_is_refused(tmp_path: Path, good: Path, capsys) -> None:
    out = tmp_path / "out"
    work = work_folder(out)
    work.mkdir()
    started = {"stage": "prepare", "config": to_jsonable(PrepareConfig(input=[str(good)], lang="ru"))}
    (work / STARTED_JSON).write_text(json.dumps(started))
    code, err = run_cli(["--input", str(good), "--lang", "hu", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "unfinished prepare run of another config (changed: lang)" in err, err
    assert not out.exists() and not scratch_dir(out).exists()
    assert sorted(p.name for p in work.iterdir()) == [STARTED_JSON]  # left as it was


def test_finished_run_summary_skip_and_other_config(tmp_path: Path, good: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--input", str(good), "--lang", "hu", "--out", str(out), "--no-language-id"]

    main(["corpus", "prepare", *args])
    first = capsys.readouterr().out
    assert (out / "DONE").exists() and not work_folder(out).exists() and not scratch_dir(out).exists()
    assert first.startswith("kept ") and f"shard(s) in {out / 'shards'}" in first, first

    main(["corpus", "prepare", *args])  # the same config again: skipped, the same summary
    again = capsys.readouterr().out
    assert "finished with the same config; skipped" in again and first.splitlines()[0] in again

    code, err = run_cli([*args, "--min-words", "5"], capsys)
    assert code == 2 and err.count("\n") == 1 and "another config (changed: min_words)" in err, err


def test_import_stays_light() -> None:
    """The recipe planner and the CLI's printer import corpus.prepare: no torch, transformers or datatrove's
    pipeline modules."""
    code = ("import sys, langadapt.corpus.prepare; "
            "print(sorted(m for m in ('torch', 'transformers', 'langadapt.corpus.plan') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
