"""corpus prepare on bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import tiny

from langadapt.cli import main
from langadapt.corpus.prepare import work_dir


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
        ("other_run", "another run's files"),
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
    assert not work_dir(out).exists()


def test_language_py3langid_cannot_identify(tmp_path: Path, good: Path, capsys) -> None:
    code, err = run_cli(["--input", str(good), "--lang", "yi", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "language_id" in err and err.count("\n") == 1


def test_unfinished_run_with_other_settings_is_refused(tmp_path: Path, good: Path, capsys) -> None:
    out = tmp_path / "out"
    work_dir(out).mkdir()
    (work_dir(out) / "run.json").write_text('{"config": {"lang": "ru"}, "files": []}')
    code, err = run_cli(["--input", str(good), "--lang", "hu", "--out", str(out)], capsys)
    assert code == 2 and "unfinished run with other settings" in err and err.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in work_dir(out).iterdir()) == ["run.json"]
