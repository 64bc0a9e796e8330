"""Every subcommand has --help; user mistakes are one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from langadapt.cli import expand_multi_values

COMMANDS = [
    [], ["run"], ["demo"], ["version"], ["model-path"],
    ["tokenizer", "extend"], ["tokenizer", "stats"], ["tokenizer", "sweep"],
    ["embeddings", "init"], ["embeddings", "distill"], ["eval", "bpb"],
    ["data", "pack"], ["train", "pretrain"], ["corpus", "prepare"], ["eval", "choice"], ["eval", "make-choice"],
    ["eval", "translate"], ["report"],
]  # fmt: skip


def langadapt(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "langadapt.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_on_every_subcommand(command):
    from typer.testing import CliRunner

    from langadapt.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_multi_value_options_expand():
    argv = ["eval", "bpb", "--models", "a", "b", "--target", "x.txt", "y.txt", "--max-docs", "3"]
    assert expand_multi_values(argv) == [
        "eval", "bpb", "--models", "a", "--models", "b", "--target", "x.txt", "--target", "y.txt",
        "--max-docs", "3",
    ]  # fmt: skip


def test_usage_errors_are_click_messages_not_tracebacks():
    """typer >= 0.2x raises its own copy of click's exceptions: main() must still catch them."""
    result = langadapt("tokenizer", "sweep", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr and "Traceback" not in result.stderr


def test_user_error_is_one_line_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nextend:\n  num_new_tokns: 5\n")
    result = langadapt("run", str(recipe))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "num_new_tokns" in result.stderr and str(recipe) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_folder_is_exit_2(tmp_path):
    result = langadapt("model-path", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such model folder" in result.stderr
