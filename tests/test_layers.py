"""The package's layering (ARCHITECTURE.md "Layering"), checked by import-linter with the contracts in
pyproject.toml: a module imports only from its own layer or below."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports() -> list[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return [exe, "--no-cache"]  # reads [tool.importlinter] of the pyproject.toml in the working directory


def test_import_layers_hold():
    # PYTHONPATH: the checker imports the package from this checkout's src/, as the tests do
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(lint_imports(), cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
