"""Bad input from real model families (issue 16): one line naming the file, exit code 2, nothing left
behind; and ``tokenizer verify`` from the command line (exit 1 on a failed check, 0 when all hold)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import tiny
from ext_tok import extend_tokenizer
from real_tokenizers import real_tokenizer


def langadapt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "langadapt.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_unigram_tokenizer_is_refused(tmp_path):
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", tiny.demo_texts("hu", n=20))
    out = tmp_path / "out"
    result = langadapt("tokenizer", "extend", "--base", real_tokenizer("xlmr"), "--corpus", corpus,
                       "--num-new-tokens", "10", "--out", out)  # fmt: skip
    one_line_error(result, "tokenizer.json", "Unigram")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_tokenizer_model_of_another_vocabulary_is_refused(tmp_path):
    """Mistral v3's tokenizer.json with v1's tokenizer.model (a stale file): extending it would write a
    tokenizer.model that silently disagrees."""
    base = tmp_path / "base"
    shutil.copytree(real_tokenizer("mistral-v3"), base)
    shutil.copy(real_tokenizer("mistral-v1") / "tokenizer.model", base / "tokenizer.model")
    corpus = tiny.write_jsonl(tmp_path / "hu.jsonl", tiny.demo_texts("hu", n=20))
    out = tmp_path / "out"
    result = langadapt("tokenizer", "extend", "--base", base, "--corpus", corpus, "--num-new-tokens", "10",
                       "--out", out)  # fmt: skip
    one_line_error(result, str(base / "tokenizer.model"))
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_model_with_fewer_rows_than_tokens_is_refused(tmp_path, bytelevel_tok, hu_texts):
    model = tiny.tiny_model(tmp_path / "model", bytelevel_tok, extra_rows=-5)
    ext = extend_tokenizer(bytelevel_tok, hu_texts[:100], tmp_path / "tok", 20)
    out = tmp_path / "out"
    result = langadapt("embeddings", "init", "--model", model, "--tokenizer", ext, "--out", out, "--device", "cpu")
    one_line_error(result, str(model), "embedding rows")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_verify_command(tmp_path, bytelevel_tok, hu_texts, en_texts):
    ext = extend_tokenizer(bytelevel_tok, hu_texts[:150], tmp_path / "tok", 30)
    hu = tiny.write_jsonl(tmp_path / "hu.jsonl", hu_texts[150:200])
    en = tiny.write_jsonl(tmp_path / "en.jsonl", en_texts[:20])
    ok = langadapt("tokenizer", "verify", "--base", bytelevel_tok, "--extended", ext, "--corpus", hu,
                   "--english", en, "--max-english-changed", "1")  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: 30 new tokens")
    # a new token whose merge is gone can never be produced: one FAIL line, exit 1
    data = json.loads((ext / "tokenizer.json").read_text())
    last = max(data["model"]["vocab"], key=data["model"]["vocab"].get)
    data["model"]["merges"] = [m for m in data["model"]["merges"] if "".join(m) != last]
    (ext / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    bad = langadapt("tokenizer", "verify", "--base", bytelevel_tok, "--extended", ext, "--json")
    assert bad.returncode == 1
    record = json.loads(bad.stdout)
    assert not record["ok"] and record["unreachable"] == 1
    assert "not reachable" in record["failures"][0]


def test_verify_names_a_missing_folder(tmp_path, bytelevel_tok):
    result = langadapt("tokenizer", "verify", "--base", bytelevel_tok, "--extended", tmp_path / "nope")
    one_line_error(result, str(tmp_path / "nope"), "tokenizer.json")


def test_extension_json_records_the_verification(tmp_path, bytelevel_tok, hu_texts):
    ext = extend_tokenizer(bytelevel_tok, hu_texts[:100], tmp_path / "tok", 20)
    record = json.loads((Path(ext) / "extension.json").read_text())["verification"]
    assert record["ok"] and record["new_tokens"] == 20 and record["unreachable"] == 0
