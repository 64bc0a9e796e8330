"""Where llama.cpp's converter and a runtime library come from (nothing is compiled, nothing downloaded).

The converter (:func:`find_llama_cpp`): ``convert_hf_to_gguf.py`` with its ``conversion/`` modules and the
``gguf-py`` it vendors (newer than the registry's ``gguf``, and the one the converter is written against).
The llama-cpp-python source archive vendors all of it under ``vendor/llama.cpp`` (plus the pure-Python
ctypes layer ``llama_cpp/llama_cpp.py`` that :mod:`.session` drives a runtime with); a llama.cpp checkout
has the converter at its top. Looked for in: the path given (an archive, its extracted folder or a
checkout), ``$LANGADAPT_LLAMA_CPP``, then an archive extracted earlier under ``$LANGADAPT_CACHE/llama.cpp``.
An archive is extracted once (only the members needed, ~10 MB of 76) into that cache.

The runtime library (:func:`find_library`): the path given (a ``libllama`` file or its folder),
``$LLAMA_CPP_LIB_PATH`` (llama-cpp-python's own variable), the prebuilt ``libllama`` inside an installed
``xllamacpp`` wheel (found without importing it), then an installed llama-cpp-python's own library.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from langadapt.errors import UserError
from langadapt.models import cache_dir

ENV_SOURCE = "LANGADAPT_LLAMA_CPP"
ENV_LIB = "LLAMA_CPP_LIB_PATH"
CONVERTER = "convert_hf_to_gguf.py"
VENDORED = Path("vendor") / "llama.cpp"
BINDINGS = ("_ctypes_extensions.py", "llama_cpp.py")
"""The two files of llama-cpp-python's ctypes layer :mod:`.session` loads (never its high-level package)."""
ARCHIVE_MEMBERS = (f"{VENDORED.as_posix()}/{CONVERTER}", f"{VENDORED.as_posix()}/conversion/",
                   f"{VENDORED.as_posix()}/gguf-py/", "llama_cpp/")  # fmt: skip
HOW_TO_GET = ("pass --llama-cpp (the llama-cpp-python source archive: `pip download --no-deps --no-binary :all: "
              "llama-cpp-python==0.3.36`, its extracted folder, or a llama.cpp checkout) or set "
              f"${ENV_SOURCE}")  # fmt: skip


@dataclass(frozen=True)
class LlamaCppSource:
    root: Path
    """Folder with convert_hf_to_gguf.py, conversion/ and gguf-py/."""
    bindings: Path | None
    """Folder with llama-cpp-python's ctypes layer (llama_cpp.py), when the source has one."""
    origin: str
    """How it was found (recorded in stage.json)."""

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"

    @property
    def name(self) -> str:
        """The archive's or checkout's folder name (llama_cpp_python-0.3.36, llama.cpp, ...)."""
        return (self.root.parents[1] if self.root.parts[-2:] == VENDORED.parts else self.root).name


def cache_root() -> Path:
    return cache_dir() / "llama.cpp"


def find_llama_cpp(path: str = "") -> LlamaCppSource:
    """The converter from ``path``, ``$LANGADAPT_LLAMA_CPP`` or the cache; UserError when there is none."""
    if path:
        return _source_at(Path(path), "--llama-cpp")
    if os.environ.get(ENV_SOURCE):
        return _source_at(Path(os.environ[ENV_SOURCE]), f"${ENV_SOURCE}")
    cached = cached_source()
    if cached is not None:
        return cached
    raise UserError(f"no llama.cpp converter found: {HOW_TO_GET}")


def cached_source() -> LlamaCppSource | None:
    """The newest archive extracted into the cache earlier, if any."""
    root = cache_root()
    found = sorted(root.glob(f"*/{VENDORED.as_posix()}/{CONVERTER}"), key=lambda p: p.stat().st_mtime) \
        if root.is_dir() else []  # fmt: skip
    return _folder_source(found[-1].parents[2], f"cache {root}") if found else None


def _source_at(path: Path, given: str) -> LlamaCppSource:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _folder_source(extract_archive(path), f"{given} {path} (extracted into {cache_root()})")
    if path.is_dir():
        source = _folder_source(path, f"{given} {path}")
        if source is not None:
            return source
        raise UserError(f"not a llama.cpp source: neither {CONVERTER} nor {VENDORED / CONVERTER} with gguf-py/ "
                        "beside it", path)  # fmt: skip
    raise UserError(f"no such llama.cpp source ({given}: a llama-cpp-python .tar.gz, its folder or a llama.cpp "
                    "checkout)", path)  # fmt: skip


def _folder_source(folder: Path, origin: str) -> LlamaCppSource | None:
    """An extracted archive (vendor/llama.cpp inside) or a checkout (the converter at the top)."""
    for root in (folder / VENDORED, folder):
        if (root / CONVERTER).is_file() and (root / "gguf-py" / "gguf").is_dir():
            bindings = folder / "llama_cpp" if root != folder else None
            has_bindings = bindings is not None and all((bindings / f).is_file() for f in BINDINGS)
            return LlamaCppSource(root.resolve(), bindings.resolve() if has_bindings else None, origin)
    return None


def extract_archive(archive: Path, into: Path | None = None) -> Path:
    """The archive's needed members, extracted once into ``into`` (default: the cache), atomically (a
    temporary folder renamed)."""
    stem = archive.name.removesuffix(".tar.gz").removesuffix(".tgz")
    dest = (into or cache_root()) / stem
    if (dest / VENDORED / CONVERTER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{stem}-"))
    try:
        with tarfile.open(archive, "r:gz") as tf:
            members = [m for m in tf if _wanted(m.name) and (m.isfile() or m.isdir())]
            if not any(m.name.endswith(f"/{CONVERTER}") for m in members):
                raise UserError(f"not a llama-cpp-python source archive (no {VENDORED / CONVERTER})", archive)
            top = members[0].name.split("/")[0]
            # filter="data": no absolute paths, links or devices from an archive
            kwargs = {"filter": "data"} if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter") else {}
            tf.extractall(tmp, members=members, **kwargs)
        if dest.exists():  # another process finished first
            return dest
        os.replace(tmp / top, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"cannot read the llama.cpp source archive ({exc})", archive) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _wanted(name: str) -> bool:
    inner = name.split("/", 1)[1] if "/" in name else ""
    return any(inner == m or inner.startswith(m) for m in ARCHIVE_MEMBERS)


# ------------------------------------------------------------------------------------------- runtime


@dataclass(frozen=True)
class LibrarySource:
    path: Path
    """The shared library file (llama.cpp's C API)."""
    origin: str
    """How it was found."""
    bindings: Path | None = None
    """The ctypes layer that belongs to this library (an installed llama-cpp-python's own), if any."""


LIB_NAMES = ("libllama.so", "libllama.dylib", "llama.dll", "libllama.dll")


def find_library(lib: str = "") -> LibrarySource | None:
    """The runtime library (see the module doc); None when none is found; UserError for a bad ``lib``."""
    if lib:
        found = _library_at(Path(lib))
        if found is None:
            raise UserError(f"no llama.cpp library here (a {' / '.join(LIB_NAMES[:2])} file or its folder)", lib)
        return LibrarySource(found, f"--llama-lib {lib}")
    if os.environ.get(ENV_LIB):
        found = _library_at(Path(os.environ[ENV_LIB]))
        if found is not None:
            return LibrarySource(found, f"${ENV_LIB} {os.environ[ENV_LIB]}")
    xl = _package_folder("xllamacpp")
    if xl is not None:
        # the wheel's extension module is a prebuilt libllama exporting llama.cpp's C API (llama_*)
        so = sorted(p for p in xl.glob("xllamacpp*") if p.suffix in (".so", ".pyd", ".dylib"))
        if so:
            return LibrarySource(so[0], f"xllamacpp package {xl}")
    lcp = _package_folder("llama_cpp")
    if lcp is not None:
        found = _library_at(lcp / "lib")
        if found is not None and all((lcp / f).is_file() for f in BINDINGS):
            return LibrarySource(found, f"llama-cpp-python package {lcp}", bindings=lcp)
    return None


def _library_at(path: Path) -> Path | None:
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        return next(((path / n).resolve() for n in LIB_NAMES if (path / n).is_file()), None)
    return None


def _package_folder(name: str) -> Path | None:
    """An installed package's folder, found without importing it (importing xllamacpp starts its server
    layer; importing llama_cpp its high-level API)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_bindings(library: LibrarySource, llama_cpp: str = "") -> tuple[Path | None, str]:
    """The ctypes layer to drive ``library`` with, and where it came from: the library's own, else the
    converter source's (the llama-cpp-python archive), else an installed llama-cpp-python's."""
    if library.bindings is not None:
        return library.bindings, str(library.bindings)
    try:
        source = find_llama_cpp(llama_cpp)
    except UserError:
        source = None
    if source is not None and source.bindings is not None:
        return source.bindings, f"{source.name} ({source.origin})"
    lcp = _package_folder("llama_cpp")
    if lcp is not None and all((lcp / f).is_file() for f in BINDINGS):
        return lcp, f"llama-cpp-python package {lcp}"
    return None, ""
