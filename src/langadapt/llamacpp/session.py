"""A GGUF model in a real llama.cpp runtime: tokenize, detokenize, logits at every position, greedy generation.

The runtime is llama.cpp's C API in a shared library (:func:`langadapt.llamacpp.sources.find_library`),
driven through llama-cpp-python's pure-Python ctypes layer (``llama_cpp/llama_cpp.py``). Only that layer is
loaded, as modules of a private synthetic ``llama_cpp`` package (the archive's ``llama_cpp/__init__.py``
would pull its high-level API, and an installed llama-cpp-python must stay untouched). The layer binds
every symbol at import; a library a little older or newer than it lacks a few it never needs here (the
xllamacpp wheel: ``llama_model_quantize*``, ``llama_max_parallel_sequences``), so a missing symbol is
recorded in :attr:`LlamaRuntime.missing_symbols` instead of failing the import, and only a missing symbol
this module calls (:data:`REQUIRED`) is an error.

    rt = load_runtime()                       # None when no runtime is found
    with LlamaCppModel(Path("m.gguf"), rt) as m:
        ids = m.tokenize("Hello")             # BOS as the model's GGUF says
        m.logits(ids)                         # [len(ids), n_vocab] float32, a fresh context
        m.generate(ids, 16, banned=[m.eos])   # greedy, KV cache
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langadapt.errors import UserError
from langadapt.llamacpp.sources import LibrarySource, find_bindings, find_library

if TYPE_CHECKING:
    import numpy
    from typing_extensions import Self

REQUIRED = (
    "llama_backend_init", "llama_model_default_params", "llama_model_load_from_file", "llama_model_free",
    "llama_context_default_params", "llama_init_from_model", "llama_free", "llama_model_get_vocab",
    "llama_vocab_n_tokens", "llama_tokenize", "llama_detokenize", "llama_batch_init", "llama_batch_free",
    "llama_decode", "llama_get_logits", "llama_get_memory", "llama_memory_clear", "llama_vocab_bos",
    "llama_vocab_eos", "llama_log_set",
)  # fmt: skip
"""The C functions this module calls: a library without one of them cannot be used."""

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], LlamaRuntime] = {}


@dataclass
class LlamaRuntime:
    api: Any = field(repr=False)
    """The loaded ctypes layer (llama-cpp-python's ``llama_cpp.llama_cpp``, bound to :attr:`library`)."""
    library: Path
    source: str
    """Where the library and the ctypes layer came from (for records)."""
    missing_symbols: list[str]
    """Symbols the ctypes layer binds that the library lacks (tolerated: none of them is called here)."""


def load_runtime(lib: str = "", *, llama_cpp: str = "") -> LlamaRuntime | None:
    """The llama.cpp runtime (``lib``: a library file or folder; else found as
    :func:`~langadapt.llamacpp.sources.find_library` says), or None when none can be found; a ``lib``
    given that is no loadable library, or one lacking a function called here, is a UserError.
    ``llama_cpp``: the source whose ctypes layer drives it (default: as ``export gguf`` finds it)."""
    runtime, _ = find_runtime(lib, llama_cpp=llama_cpp)
    return runtime


def find_runtime(lib: str = "", *, llama_cpp: str = "") -> tuple[LlamaRuntime | None, str]:
    """:func:`load_runtime`, with the reason when there is none ("" when found)."""
    library = find_library(lib)
    if library is None:
        return None, ("no llama.cpp runtime library found (pip install xllamacpp, or pass --llama-lib / set "
                      "$LLAMA_CPP_LIB_PATH to a libllama build)")  # fmt: skip
    bindings, where = find_bindings(library, llama_cpp)
    if bindings is None:
        return None, (f"found the library {library.path} but no llama-cpp-python ctypes layer to drive it "
                      "(pass --llama-cpp with the llama-cpp-python source archive)")  # fmt: skip
    key = (str(library.path), str(bindings))
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(library, bindings, where)
    return _LOADED[key], ""


def _load(library: LibrarySource, bindings: Path, where: str) -> LlamaRuntime:
    missing: list[str] = []
    try:
        api = _load_bindings(bindings, library.path, missing)
    except OSError as exc:  # not a loadable library (wrong platform, missing dependency)
        raise UserError(f"cannot load the llama.cpp library ({exc})", library.path) from exc
    lacking = [name for name in REQUIRED if name in missing or not hasattr(api, name)]
    if lacking:
        raise UserError(f"the llama.cpp library lacks functions langadapt calls: {', '.join(lacking)} (a newer "
                        "or older build than the ctypes layer)", library.path)  # fmt: skip
    _quiet(api)
    api.llama_backend_init()
    return LlamaRuntime(api, library.path, f"{library.origin}; ctypes layer: {where}", sorted(missing))


def _load_bindings(folder: Path, library: Path, missing: list[str]) -> types.ModuleType:
    """llama-cpp-python's ``_ctypes_extensions.py`` and ``llama_cpp.py`` from ``folder``, bound to ``library``.

    The layer imports itself as ``llama_cpp._ctypes_extensions``, so a synthetic ``llama_cpp`` package
    stands in ``sys.modules`` while it loads; whatever ``llama_cpp`` was there before is put back after."""
    saved = {k: v for k, v in sys.modules.items() if k == "llama_cpp" or k.startswith("llama_cpp.")}
    for k in saved:
        del sys.modules[k]
    package = types.ModuleType("llama_cpp")
    package.__path__ = [str(folder)]
    sys.modules["llama_cpp"] = package
    try:
        ext = _exec_module(folder, "_ctypes_extensions")
        ext.load_shared_library = lambda _name, _base: ctypes.CDLL(str(library))
        ext.ctypes_function_for_shared_library = _tolerant(ext.ctypes_function_for_shared_library, missing)
        return _exec_module(folder, "llama_cpp")
    finally:
        for k in [k for k in sys.modules if k == "llama_cpp" or k.startswith("llama_cpp.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _exec_module(folder: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"llama_cpp.{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tolerant(bind: Callable, missing: list[str]) -> Callable:
    """``ctypes_function_for_shared_library`` that records a symbol the library lacks instead of failing."""

    def for_library(lib: ctypes.CDLL) -> Callable:
        strict = bind(lib)

        def ctypes_function(name: str, argtypes: list, restype: Any, enabled: bool = True) -> Callable:
            if enabled and not hasattr(lib, name):
                missing.append(name)
                return lambda f: f  # the Python stub stays; calling it returns None
            return strict(name, argtypes, restype, enabled)

        return ctypes_function

    return for_library


_LOG_CALLBACK: Any = None


def _quiet(api: Any) -> None:
    """llama.cpp logs every model load on stderr; keep errors only."""
    global _LOG_CALLBACK

    def log(level: int, text: bytes, _user: Any) -> None:
        if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml's enum: 1 debug, 2 info, 3 warn, 4 error, 5 cont)
            sys.stderr.write(text.decode("utf-8", "replace"))

    _LOG_CALLBACK = api.llama_log_callback(log)  # kept alive: C holds the pointer
    api.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


class LlamaCppModel:
    """One GGUF model with one context (``n_ctx`` tokens); every call starts from an empty KV cache."""

    def __init__(self, gguf: Path, runtime: LlamaRuntime, *, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        api = self._api = runtime.api
        gguf = Path(gguf)
        if not gguf.is_file():
            raise UserError("no such GGUF file", gguf)
        mparams = api.llama_model_default_params()
        self._model = api.llama_model_load_from_file(str(gguf).encode(), mparams)
        if not self._model:
            raise UserError("llama.cpp could not load this GGUF file", gguf)
        threads = n_threads or os.cpu_count() or 1
        cparams = api.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
        cparams.n_threads = cparams.n_threads_batch = threads
        self._ctx = api.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            api.llama_model_free(self._model)
            self._model = None
            raise UserError(f"llama.cpp could not make a context of {n_ctx} tokens", gguf)
        self._vocab = api.llama_model_get_vocab(self._model)
        self.n_vocab: int = api.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = n_ctx
        self.bos: int = api.llama_vocab_bos(self._vocab)
        """The BOS id (-1: none)."""
        self.eos: int = api.llama_vocab_eos(self._vocab)
        """The EOS id (-1: none)."""

    # -------------------------------------------------------------------------------------- tokens

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Ids of ``text``; ``add_special``: BOS/EOS as the GGUF says; ``parse_special``: special tokens
        written in the text are those tokens (else plain text)."""
        data = text.encode("utf-8")
        size = len(data) + 8
        for _ in range(2):
            buf = (self._api.llama_token * size)()
            n = self._api.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            size = -n  # the buffer was too small: n is minus the count needed
        raise RuntimeError("llama_tokenize failed")

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens written out (as transformers' ``decode`` does by default)."""
        arr = (self._api.llama_token * max(len(ids), 1))(*ids)
        size = 8 * len(ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self._api.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            size = -n
        raise RuntimeError("llama_detokenize failed")

    # -------------------------------------------------------------------------------------- forward

    def _reset(self) -> None:
        self._api.llama_memory_clear(self._api.llama_get_memory(self._ctx), True)

    def _decode(self, ids: list[int], start: int, all_logits: bool) -> numpy.ndarray:
        """Feed ``ids`` at positions ``start``.. in chunks of ``n_ctx``; logits of every position (or the last)."""
        import numpy as np

        if start + len(ids) > self.n_ctx:
            raise ValueError(f"{start + len(ids)} tokens do not fit the context of {self.n_ctx}")
        api = self._api
        out = []
        batch = api.llama_batch_init(self.n_ctx, 0, 1)
        try:
            for c in range(0, len(ids), self.n_ctx):
                chunk = ids[c : c + self.n_ctx]
                batch.n_tokens = len(chunk)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = start + c + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = all_logits or (c + i == len(ids) - 1)
                rc = api.llama_decode(self._ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc}")
                rows = len(chunk) if all_logits else int(c + len(chunk) == len(ids))
                if rows:
                    ptr = api.llama_get_logits(self._ctx)
                    out.append(np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab)).copy())
        finally:
            api.llama_batch_free(batch)
        return np.concatenate(out) if out else np.zeros((0, self.n_vocab), dtype=np.float32)

    def logits(self, ids: list[int]) -> numpy.ndarray:
        """``[len(ids), n_vocab]`` float32: the logits after every position, from a fresh context."""
        self._reset()
        return self._decode(list(ids), 0, all_logits=True)

    def generate(self, ids: list[int], max_new_tokens: int, *, banned: Iterable[int] = (),
                 stop: Callable[[list[int]], bool] | None = None) -> list[int]:  # fmt: skip
        """Greedy continuation of ``ids`` (argmax, KV cache), the new ids only. ``banned`` ids are never
        chosen; it stops after ``max_new_tokens`` or when ``stop(new_ids)`` is true."""
        import numpy as np

        self._reset()
        ids = list(ids)
        banned = np.array(sorted(set(banned)), dtype=np.int64)
        logits = self._decode(ids, 0, all_logits=False)[-1]
        new: list[int] = []
        while len(new) < max_new_tokens:
            if banned.size:
                logits = logits.copy()
                logits[banned] = -np.inf
            token = int(np.argmax(logits))
            new.append(token)
            if stop is not None and stop(new):
                break
            if len(new) == max_new_tokens or len(ids) + len(new) >= self.n_ctx:
                break
            logits = self._decode([token], len(ids) + len(new) - 1, all_logits=False)[-1]
        return new

    def follow(self, ids: list[int], reference: list[int]) -> int:
        """Decode ``reference`` after ``ids`` one token per step (KV cache), as :meth:`generate` does, but
        feeding the reference's tokens instead of the argmax; the count of steps whose argmax was the
        reference token. The decoding work of writing a given text (``eval speed``'s held-out text)."""
        import numpy as np

        self._reset()
        ids = list(ids)
        logits = self._decode(ids, 0, all_logits=False)[-1]
        agreed = 0
        for i, token in enumerate(reference):
            agreed += int(np.argmax(logits)) == token
            logits = self._decode([token], len(ids) + i, all_logits=False)[-1]
        return agreed

    # -------------------------------------------------------------------------------------- lifetime

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._api.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._api.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone already
            self.close()
