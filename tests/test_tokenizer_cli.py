"""Bad input to the tokenizer commands: one line on stderr, exit code 2, no output folder left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from langadapt.cli import main


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def extend_args(base: Path, corpus: Path, out: Path, n: str = "20") -> list[str]:
    return ["tokenizer", "extend", "--base", str(base), "--corpus", str(corpus), "--num-new-tokens", n,
            "--out", str(out)]  # fmt: skip


def sweep_args(base: Path, corpus: Path, out: Path, sizes: str) -> list[str]:
    repeated = [arg for size in sizes.split(",") for arg in ("--sizes", size)]
    return ["tokenizer", "sweep", "--base", str(base), "--corpus", str(corpus), "--out", str(out), *repeated]


def wordpiece_folder(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def bad_inputs(tmp_path: Path, base: Path, good: Path) -> dict[str, list[str]]:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02\xff" * 100)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("árvíztűrő tükörfúrógép".encode("latin-1", errors="replace"))
    existing = tmp_path / "existing"
    existing.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    out = tmp_path / "out"
    return {
        "missing": extend_args(base, tmp_path / "nope.jsonl", out),
        "empty": extend_args(base, empty, out),
        "binary": extend_args(base, binary, out),
        "non-utf8": extend_args(base, latin1, out),
        "wordpiece": extend_args(wordpiece_folder(tmp_path / "wp"), good, out),
        "broken tokenizer": extend_args(broken, good, out),
        "stats broken tokenizer": ["tokenizer", "stats", "--tokenizer", str(broken), "--corpus", str(good)],
        "zero tokens": extend_args(base, good, out, n="0"),
        "negative tokens": extend_args(base, good, out, n="-5"),
        "existing out": extend_args(base, good, existing),
        "stats missing": ["tokenizer", "stats", "--tokenizer", str(base), "--corpus", str(tmp_path / "x")],
        "sweep bad sizes": sweep_args(base, good, out, "100,-1"),
        "sweep wordpiece": sweep_args(tmp_path / "wp", good, out, "10"),
    }  # fmt: skip


CASES = ["missing", "empty", "binary", "non-utf8", "wordpiece", "broken tokenizer", "stats broken tokenizer",
         "zero tokens", "negative tokens",
         "existing out", "stats missing", "sweep bad sizes", "sweep wordpiece"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(tmp_path, bytelevel_tok, hu_corpus, capsys, case):
    args = bad_inputs(tmp_path, bytelevel_tok, hu_corpus)[case]
    before = set(tmp_path.iterdir())
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert set(tmp_path.iterdir()) == before  # no output folder, no temporary folder


def test_unsupported_model_error_names_it(tmp_path, hu_corpus, capsys):
    run_cli(extend_args(wordpiece_folder(tmp_path / "wp"), hu_corpus, tmp_path / "out"))
    assert "WordPiece" in capsys.readouterr().err


def test_extend_and_stats_through_the_cli(tmp_path, bytelevel_tok, hu_corpus, en_corpus, capsys):
    out = tmp_path / "tok"
    main([*extend_args(bytelevel_tok, hu_corpus, out), "--english-corpus", str(en_corpus)])
    assert "+20" in capsys.readouterr().out
    record = json.loads((out / "extension.json").read_text())
    assert record["added"] == 20 and (out / "DONE").exists()
    main(["tokenizer", "stats", "--tokenizer", str(out), "--corpus", str(hu_corpus), "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokens_per_word"] == record["fertility"]["target"]["after"]["tokens_per_word"]


def test_stats_reports_byte_fallback(tmp_path, metaspace_tok, capsys):
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", ["árvíztűrő tükörfúrógép ő ű"])
    main(["tokenizer", "stats", "--tokenizer", str(metaspace_tok), "--corpus", str(corpus)])
    text = capsys.readouterr().out
    assert "byte-fallback share" in text
