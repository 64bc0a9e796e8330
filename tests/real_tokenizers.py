r"""Real tokenizers of the major model families, fetched from package registries and converted offline.

    real_tokenizer("llama3") -> Path   # a folder AutoTokenizer.from_pretrained loads

Each folder has a `tokenizer.json` made by transformers' own converters (never written by hand), a
`tokenizer_config.json`, a `special_tokens_map.json`, the real SentencePiece `tokenizer.model` for the
families that ship one (`mistral-v1`, `mistral-v3`), and `fixture.json` (where it came from).

Sources, fetched once with `pip download --no-deps` into the cache (no hub access):

* `llama-models` wheel: Meta's tiktoken BPE files of Llama-3 and Llama-4, with their special tokens and
  split regexes in `llama_models/llama3|llama4/tokenizer.py` -> transformers' `TikTokenConverter`.
* `mistral-common` wheel: Mistral's SentencePiece models (v1, v3) -> transformers' `LlamaTokenizer`
  conversion (`LlamaConverter` / `SentencePieceExtractor`), and `tekken_240911.json` -> transformers'
  `MistralConverter` (the tekken conversion).
* `llama-cpp-python` sdist (76 MB; only the needed members are extracted): llama.cpp's vocab-only test
  GGUFs `vendor/llama.cpp/models/ggml-vocab-*.gguf` -> transformers' GGUF tokenizer mapping
  (`get_gguf_tokenizer` + `convert_gguf_tokenizer`). Their `.gguf.inp`/`.gguf.out` files hold llama.cpp's
  reference tokenizations (made with the models' own HF tokenizers): see `reference_cases`.

Cache: `$LANGADAPT_TEST_CACHE` if set, else `<repo>/.cache-ci/real-tokenizers`. Downloads happen once;
converted folders are cached (under `tokenizers/<name>-f<FORMAT>`), each written to a temporary folder
and renamed into place. When a download fails (no network), `real_tokenizer` calls `pytest.skip`.

Notes on fidelity (the figures are checked by tests/test_real_tokenizers.py):

* `llama3` uses the special-token layout of `llama_models` 0.3.0 (Llama-3.2 vision era:
  `<|step_id|>` 128005, `<|image|>` 128011, `<|reserved_special_token_200|>` 128210); HF's Llama-3.1 repos
  put reserved tokens at 128005/128011 instead (so there `_200` is 128208).
* `qwen2` / `qwen35`: llama.cpp's file is the Qwen2 (not 2.5) vocabulary, 151,643 BPE tokens + 3 added
  (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`); the file's `[PAD151646]`.. placeholders for unused
  embedding rows are dropped, as in HF's Qwen2 tokenizer. `qwen35` is the same vocabulary with Qwen3.5's
  split regex (llama.cpp's test file for that pre-tokenizer), not Qwen3.5's 248k vocabulary. It has no
  NFC normalizer: llama.cpp's reference ids keep combining marks apart (`"e\u0301"` -> 2 ids), which is what
  Qwen3.5's `\p{M}` in its regex is for (transformers' Qwen3_5Tokenizer class would add NFC).
* `gemma` is Gemma-4's 262,144-piece vocabulary (llama.cpp's `ggml-vocab-gemma-4.gguf`).
* `xlmr` is XLM-R's Unigram vocabulary (250,002 pieces) from nomic-embed-text-v2-moe's GGUF, built with
  transformers' XLMRobertaTokenizer and the GGUF's precompiled charsmap; there is no reference tokenizer to
  check its ids against, so it is meant for "refuse Unigram" tests. Like XLM-R it does not round-trip
  whitespace.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORMAT = 4  # bump when a conversion changes: cached folders of an older format are rebuilt


def cache_dir() -> Path:
    env = os.environ.get("LANGADAPT_TEST_CACHE")
    return Path(env) if env else REPO / ".cache-ci" / "real-tokenizers"


# ----------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Package:
    spec: str  # pip requirement
    filename: str  # the file `pip download` saves
    wheel: bool  # wheel (--only-binary) or source archive (--no-binary)


PACKAGES = {
    "llama-models": Package("llama-models==0.3.0", "llama_models-0.3.0-py3-none-any.whl", wheel=True),
    "mistral-common": Package("mistral-common==1.13.1", "mistral_common-1.13.1-py3-none-any.whl", wheel=True),
    "llama-cpp-python": Package("llama-cpp-python==0.3.36", "llama_cpp_python-0.3.36.tar.gz", wheel=False),
}
_GGUF_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models"


@dataclass(frozen=True)
class Family:
    name: str
    style: str  # "byte-level" | "sentencepiece" (BPE + byte fallback, "▁") | "unigram"
    package: str
    members: tuple[str, ...]  # files of the package it is made from (first one: the vocabulary)
    model_file: bool = False  # the folder holds the real SentencePiece tokenizer.model
    reference: str = ""  # what the conversion is checked against (see reference_encoder / reference_cases)
    note: str = ""


def _gguf(stem: str, cases: bool = True) -> tuple[str, ...]:
    base = f"{_GGUF_DIR}/ggml-vocab-{stem}.gguf"
    return (base, base + ".inp", base + ".out") if cases else (base,)


_LM3 = ("llama_models/__init__.py", "llama_models/tokenizer_utils.py")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "llama3", "byte-level", "llama-models",
            ("llama_models/llama3/tokenizer.model", *_LM3, "llama_models/llama3/__init__.py",
             "llama_models/llama3/tokenizer.py"),
            reference="tiktoken (llama_models.llama3.tokenizer.Tokenizer)",
            note="Llama-3: 128,000 BPE + 256 special tokens, Llama-3 split regex, ignore_merges",
        ),
        Family(
            "llama4", "byte-level", "llama-models",
            ("llama_models/llama4/tokenizer.model", *_LM3, "llama_models/llama4/__init__.py",
             "llama_models/llama4/tokenizer.py"),
            reference="tiktoken (llama_models.llama4.tokenizer.Tokenizer)",
            note="Llama-4: 200,000 BPE + 2,048 special tokens, o200k-style split regex",
        ),
        Family("qwen2", "byte-level", "llama-cpp-python", _gguf("qwen2"), reference="llama.cpp .inp/.out",
               note="Qwen2: 151,643 BPE + 3 added tokens, NFC"),
        Family("qwen35", "byte-level", "llama-cpp-python", _gguf("qwen35"), reference="llama.cpp .inp/.out",
               note="Qwen2 vocabulary with Qwen3.5's split regex, no normalizer"),
        Family("gpt2", "byte-level", "llama-cpp-python", _gguf("gpt-2"), reference="llama.cpp .inp/.out",
               note="GPT-2: 50,257 tokens"),
        Family(
            "tekken", "byte-level", "mistral-common", ("mistral_common/data/tekken_240911.json",
                                                       "mistral_common/tokens/tokenizers/tekken.py",
                                                       "mistral_common/tokens/tokenizers/base.py"),
            reference="tiktoken, as mistral_common's Tekkenizer uses it",
            note="Mistral tekken (Nemo): 1,000 special + 130,072 BPE tokens",
        ),
        Family("phi3", "sentencepiece", "llama-cpp-python", _gguf("phi-3"), reference="llama.cpp .inp/.out",
               note="Phi-3: Llama-2 pieces + 32 added, Prepend/Replace normalizer"),
        Family("llama2", "sentencepiece", "llama-cpp-python", _gguf("llama-spm"),
               reference="llama.cpp .inp/.out", note="Llama-2: 32,000 SentencePiece BPE pieces"),
        Family("mistral-v1", "sentencepiece", "mistral-common", ("mistral_common/data/tokenizer.model.v1",),
               model_file=True, reference="sentencepiece", note="Mistral-7B v0.1: 32,000 pieces"),
        Family("mistral-v3", "sentencepiece", "mistral-common",
               ("mistral_common/data/mistral_instruct_tokenizer_240323.model.v3",),
               model_file=True, reference="sentencepiece", note="Mistral v0.3: 32,768 pieces, 750 control"),
        Family("gemma", "sentencepiece", "llama-cpp-python", _gguf("gemma-4"), reference="llama.cpp .inp/.out",
               note="Gemma-4: 262,144 pieces"),
        Family("xlmr", "unigram", "llama-cpp-python", _gguf("nomic-bert-moe", cases=False),
               reference="the GGUF's pieces", note="XLM-R Unigram (nomic-embed-text-v2-moe), 250,002 pieces"),
    ]
}  # fmt: skip

ALL_NAMES: tuple[str, ...] = tuple(FAMILIES)
BYTE_LEVEL: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.style == "byte-level")
SENTENCEPIECE: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.style == "sentencepiece")
UNIGRAM: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.style == "unigram")
WITH_MODEL_FILE: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.model_file)
BPE_NAMES: tuple[str, ...] = BYTE_LEVEL + SENTENCEPIECE


def params(style: str | None = None, *, model_file: bool | None = None, names=None) -> list:
    """`pytest.param(name, id=name)` for `@pytest.mark.parametrize("name", params(...))`.

    style: "byte-level", "sentencepiece" or "unigram" (None: all); model_file: only those that do (True)
    or do not (False) ship a SentencePiece tokenizer.model; names: restrict to these.
    """
    chosen = [
        n
        for n, f in FAMILIES.items()
        if (style is None or f.style == style)
        and (model_file is None or f.model_file == model_file)
        and (names is None or n in names)
    ]
    return [pytest.param(n, id=n) for n in chosen]


class FetchError(RuntimeError):
    pass


@contextlib.contextmanager
def _locked(name: str):
    """Serialise fetch/convert of one item across processes (a lock file in the cache)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: the atomic renames still keep the cache consistent
            pass
        yield


def download(package: str) -> Path:
    """The package's archive in the cache, fetched once with `pip download --no-deps`."""
    pkg = PACKAGES[package]
    dest = cache_dir() / "downloads" / pkg.filename
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(f"download-{package}"):
        if dest.is_file():
            return dest
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".tmp-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--no-input", "-q", "-d", tmp, pkg.spec]  # fmt: skip
            cmd += ["--only-binary", ":all:"] if pkg.wheel else ["--no-binary", ":all:"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FetchError(f"pip download {pkg.spec}: {exc}") from exc
            got = Path(tmp) / pkg.filename
            if proc.returncode != 0 or not got.is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise FetchError(f"pip download {pkg.spec} failed (rc={proc.returncode}): {' | '.join(tail)}")
            os.replace(got, dest)
    return dest


def extract(package: str) -> Path:
    """A folder with the package's members that FAMILIES use (read in one pass; never the whole archive)."""
    root = cache_dir() / "src" / package
    wanted = sorted({m for f in FAMILIES.values() if f.package == package for m in f.members})
    if all((root / m).is_file() for m in wanted):
        return root
    archive = download(package)
    with _locked(f"extract-{package}"):
        missing = [m for m in wanted if not (root / m).is_file()]
        if not missing:
            return root

        def put(member: str, data: bytes) -> None:
            out = root / member
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, out)

        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                for m in missing:
                    put(m, zf.read(m))
        else:
            todo = set(missing)
            with tarfile.open(archive, "r:gz") as tf:
                for info in tf:
                    if info.name in todo and info.isfile():
                        put(info.name, tf.extractfile(info).read())
                        todo.discard(info.name)
                        if not todo:
                            break
            if todo:
                raise FetchError(f"{archive.name} lacks {sorted(todo)}")
    return root


def source_files(name: str) -> list[Path]:
    """The family's source files in the cache (fetched if needed), in the order of Family.members."""
    fam = FAMILIES[name]
    root = extract(fam.package)
    return [root / m for m in fam.members]


# ----------------------------------------------------------------------------------------------------
# Conversions (transformers' own converters)


def _save(backend, out: Path, **config) -> None:
    """Wrap a `tokenizers.Tokenizer` in transformers' TokenizersBackend and save it (tokenizer.json + config)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=backend, **config)
    fast.save_pretrained(str(out))


def _write_special_tokens_map(out: Path) -> None:
    if (out / "special_tokens_map.json").exists():
        return
    cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    keys = ("bos_token", "eos_token", "unk_token", "pad_token")
    stm = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    (out / "special_tokens_map.json").write_text(json.dumps(stm, indent=2, ensure_ascii=False) + "\n")


@cache
def _llama_models_tokenizer(name: str):
    """Meta's own tokenizer class (tiktoken) from the llama-models wheel."""
    import importlib

    files = source_files(name)
    root = str(files[0].parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(f"llama_models.{name}.tokenizer")
    return module.Tokenizer(files[0])


def _convert_llama_models(name: str, out: Path) -> dict:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    meta = _llama_models_tokenizer(name)
    specials = sorted(meta.special_tokens.items(), key=lambda kv: kv[1])
    base = meta.model.n_vocab - len(specials)
    assert [i for _, i in specials] == list(range(base, base + len(specials))), "special ids not contiguous"
    converter = TikTokenConverter(
        vocab_file=str(source_files(name)[0]),
        pattern=meta.model._pat_str,
        extra_special_tokens=[t for t, _ in specials],
    )
    backend = converter.converted()
    ctx = 131072 if name == "llama3" else 10485760
    _save(backend, out, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", add_bos_token=True,
          model_max_length=ctx, clean_up_tokenization_spaces=False)  # fmt: skip
    return {"converter": "transformers.convert_slow_tokenizer.TikTokenConverter"}


def _convert_sentencepiece(name: str, out: Path) -> dict:
    """transformers' own tokenizer.model conversion (SentencePieceExtractor + SpmConverter.build_tokenizer_from_spm_proto),
    which follows the model's normalizer spec and so encodes like SentencePieceProcessor.encode.

    (`LlamaTokenizer.from_pretrained` would rebuild a `Metaspace(prepend_scheme="first")` pipeline that differs from
    sentencepiece on text starting with a space, and the slow `LlamaConverter` fails in transformers 5.)
    """
    from transformers import PreTrainedTokenizerFast

    model = source_files(name)[0]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(model, Path(tmp) / "tokenizer.model")
        tok = PreTrainedTokenizerFast.from_pretrained(
            tmp, add_bos_token=True, model_max_length=32768, clean_up_tokenization_spaces=False
        )
    tok.save_pretrained(str(out))
    shutil.copyfile(model, out / "tokenizer.model")
    return {"converter": "transformers TokenizersBackend.from_pretrained(tokenizer.model): SentencePieceExtractor + "
                         "SpmConverter.build_tokenizer_from_spm_proto"}  # fmt: skip


def _tekken_special_tokens(tekken_py: Path, base_py: Path) -> list[dict]:
    """`Tekkenizer.DEPRECATED_SPECIAL_TOKENS` of mistral-common, read from its source (old tekken files such as
    tekken_240911.json list no special tokens: mistral-common and transformers' converter both use these)."""

    def enum_values(tree) -> dict[str, str]:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "SpecialTokens":
                return {
                    t.id: stmt.value.value
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                    for t in stmt.targets
                }
        raise FetchError("SpecialTokens enum not found in mistral_common")

    values = enum_values(ast.parse(base_py.read_text(encoding="utf-8")))
    for node in ast.walk(ast.parse(tekken_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEPRECATED_SPECIAL_TOKENS" for t in node.targets):
            entries = []
            for call in node.value.elts:
                kw = {k.arg: k.value for k in call.keywords}
                entries.append({"rank": kw["rank"].value, "token_str": values[kw["token_str"].attr],
                                "is_control": kw["is_control"].value})  # fmt: skip
            return entries
    raise FetchError("DEPRECATED_SPECIAL_TOKENS not found in mistral_common")


def _convert_tekken(name: str, out: Path) -> dict:
    from transformers.integrations.mistral.tokenizer import MistralConverter

    tekken_json, tekken_py, base_py = source_files(name)
    raw = json.loads(tekken_json.read_text(encoding="utf-8"))
    workaround = ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tekken.json"
        if "special_tokens" not in raw:
            # Without mistral-common installed the converter cannot look these up itself.
            raw["special_tokens"] = _tekken_special_tokens(tekken_py, base_py)
            workaround = "special_tokens taken from mistral_common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS"
        path.write_text(json.dumps(raw), encoding="utf-8")
        backend = MistralConverter(str(path)).converted()
    _save(backend, out, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
          add_bos_token=True, model_max_length=131072, clean_up_tokenization_spaces=False)  # fmt: skip
    return {"converter": "transformers.integrations.mistral.tokenizer.MistralConverter", "workaround": workaround}


def gguf_tokenizer_dict(name: str) -> tuple[str, dict, dict]:
    """`get_gguf_tokenizer` of the family's GGUF, with the workarounds the conversion applies (cached: do not mutate)."""
    return _gguf_tokenizer_dict(name)


@lru_cache(maxsize=4)
def _gguf_tokenizer_dict(name: str) -> tuple[str, dict, dict]:
    from transformers.integrations.gguf import get_gguf_tokenizer

    arch, tdict, tconfig = get_gguf_tokenizer(str(source_files(name)[0]))
    if name in ("qwen2", "qwen35", "xlmr"):
        # llama.cpp pads the vocabulary to the embedding rows with `[PAD151646]`..: not tokens of the model's.
        keep = next(i for i, t in enumerate(tdict["tokens"]) if t.startswith("[PAD"))
        tdict = dict(tdict, **{k: tdict[k][:keep] for k in ("tokens", "scores", "token_type") if k in tdict})
    return arch, tdict, tconfig


def _convert_gguf(name: str, out: Path) -> dict:
    from tokenizers import normalizers
    from transformers.integrations.gguf import convert_gguf_tokenizer
    from transformers.integrations.gguf import gguf_tokenizer_mapping as mapping

    arch, tdict, tconfig = gguf_tokenizer_dict(name)
    workaround = []
    if name == "llama2":
        # HF's Llama-2 tokenizer.json is the legacy SentencePiece pipeline (Prepend + Replace normalizer, no
        # pre-tokenizer), which is what the mapping's phi3 builder makes; its default llama builder uses
        # Metaspace(prepend_scheme="first"), which differs from sentencepiece on text starting with a space.
        tok = mapping.set_split_regex(mapping.add_gguf_special_tokens(mapping.phi3_tokenizer(tdict), tdict), tdict)
        backend, extra = tok.backend_tokenizer, {}
        workaround.append("legacy SentencePiece normalizer (the GGUF mapping's phi3 builder)")
    elif name == "xlmr":
        # The mapping's t5 builder adds T5's <extra_id_*> tokens; XLMRobertaTokenizer is XLM-R's own pipeline,
        # with the GGUF's precompiled charsmap as its normalizer.
        from transformers import XLMRobertaTokenizer

        charsmap = tdict.get("precompiled_charsmap")
        tok = XLMRobertaTokenizer(
            vocab=list(zip(tdict["tokens"], tdict["scores"])),
            _spm_precompiled_charsmap=bytes(charsmap) if charsmap is not None else None,
        )
        backend, extra = tok.backend_tokenizer, {"mask_token": "<mask>", "add_bos_token": False, "add_eos_token": False}
        workaround.append("dropped [PAD*] fillers; XLMRobertaTokenizer with the GGUF's pieces and charsmap")
    else:
        backend, extra = convert_gguf_tokenizer(arch, tdict)
    if name in ("qwen2", "qwen35"):
        workaround.append("dropped llama.cpp's [PAD*] filler tokens")
    if name == "qwen2" and backend.normalizer is None:
        # Qwen2's tokenizer.json (and Qwen2Tokenizer) normalise to NFC; the GGUF builder uses GPT2Tokenizer's pipeline.
        backend.normalizer = normalizers.NFC()
        workaround.append("NFC normalizer as in Qwen2Tokenizer")
    # Check against the GGUF itself: every piece at its id (Gemma's all-space pieces are spelled with "▁"
    # by transformers), every control token at its id.
    want = ["\u2581" * len(t) if name == "gemma" and " " in t and not t.strip() else t for t in tdict["tokens"]]
    got = [backend.id_to_token(i) for i in range(len(want))]
    if got != want or backend.get_vocab_size(with_added_tokens=True) != len(want):
        bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
        raise AssertionError(f"{name}: converted vocabulary differs from the GGUF's at id {bad}")
    config = {k: v for k, v in tconfig.items() if k != "chat_template" and v is not None}
    config.update(extra)
    _save(backend, out, model_max_length=32768, clean_up_tokenization_spaces=False, **config)
    workaround.append(f"checked: all {len(want)} GGUF pieces at their ids")
    return {"converter": "transformers.integrations.gguf (get_gguf_tokenizer + convert_gguf_tokenizer)",
            "workaround": "; ".join(workaround)}  # fmt: skip


_CONVERTERS = {
    "llama3": _convert_llama_models,
    "llama4": _convert_llama_models,
    "tekken": _convert_tekken,
    "mistral-v1": _convert_sentencepiece,
    "mistral-v3": _convert_sentencepiece,
}


def build(name: str) -> Path:
    """The converted folder (fetched and converted on first use). Raises FetchError when a fetch fails."""
    if name not in FAMILIES:
        raise KeyError(f"unknown tokenizer {name!r}; known: {', '.join(ALL_NAMES)}")
    final = cache_dir() / "tokenizers" / f"{name}-f{FORMAT}"
    if (final / "tokenizer.json").is_file():
        return final
    fam = FAMILIES[name]
    source_files(name)  # fetch before taking the conversion lock
    with _locked(f"convert-{name}"):
        if (final / "tokenizer.json").is_file():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}-"))
        try:
            start = time.perf_counter()
            info = _CONVERTERS.get(name, _convert_gguf)(name, tmp)
            _write_special_tokens_map(tmp)
            import transformers

            info.update(
                name=name, style=fam.style, source=f"{PACKAGES[fam.package].spec}:{fam.members[0]}",
                reference=fam.reference, note=fam.note, transformers=transformers.__version__,
                seconds=round(time.perf_counter() - start, 2),
            )  # fmt: skip
            (tmp / "fixture.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            if final.exists():  # an older, incomplete folder
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def real_tokenizer(name: str) -> Path:
    """Folder with the real tokenizer of `name` (see ALL_NAMES); skips the test when a source cannot be fetched."""
    try:
        return build(name)
    except FetchError as exc:
        pytest.skip(f"real tokenizer {name!r}: could not fetch {FAMILIES[name].package}: {exc}")


# ----------------------------------------------------------------------------------------------------
# The original libraries, to check the conversions against


@cache
def reference_encoder(name: str):
    """`encode(text) -> list[int]` by the family's original library (no BOS/EOS), or None for GGUF-made ones."""
    fam = FAMILIES[name]
    if name in ("llama3", "llama4"):
        model = _llama_models_tokenizer(name).model  # tiktoken.Encoding
        return lambda text: model.encode(text, allowed_special="all")
    if fam.model_file:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(source_files(name)[0]))
        return lambda text: sp.encode(text)
    if name == "tekken":
        return _tekkenizer_encode(source_files(name)[0])
    return None


def _tekkenizer_encode(path: Path):
    """mistral_common's Tekkenizer when installed, else the same tiktoken encoding it builds."""
    try:
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer

        tek = Tekkenizer.from_file(str(path))
        return lambda text: tek.encode(text, bos=False, eos=False)
    except ImportError:
        pass
    import tiktoken

    raw = json.loads(path.read_text(encoding="utf-8"))
    cfg = raw["config"]
    n_special = cfg["default_num_special_tokens"]
    inner = cfg["default_vocab_size"] - n_special
    ranks = {base64.b64decode(tok["token_bytes"]): i for i, tok in enumerate(raw["vocab"][:inner])}
    enc = tiktoken.Encoding(name="tekken", pat_str=cfg["pattern"], mergeable_ranks=ranks, special_tokens={})
    return lambda text: [i + n_special for i in enc.encode(text, allowed_special=set(), disallowed_special=())]


def reference_cases(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings for the family's GGUF and the ids the model's own HF tokenizer gave them."""
    files = source_files(name)
    if len(files) < 3 or not files[1].name.endswith(".inp"):
        return []
    texts = files[1].read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = files[2].read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, ids)]


def reference_special_ids(name: str) -> dict[str, int]:
    """The special (control) tokens and their ids as the original source spells them."""
    if name in ("llama3", "llama4"):
        return dict(_llama_models_tokenizer(name).special_tokens)
    if FAMILIES[name].model_file:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(source_files(name)[0]))
        return {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    if name == "tekken":
        tekken_json, tekken_py, base_py = source_files(name)
        raw = json.loads(tekken_json.read_text(encoding="utf-8"))
        specials = raw.get("special_tokens") or _tekken_special_tokens(tekken_py, base_py)
        return {s["token_str"]: s["rank"] for s in specials}
    _, tdict, _ = gguf_tokenizer_dict(name)
    return {t: i for i, (t, k) in enumerate(zip(tdict["tokens"], tdict["token_type"])) if k == 3}
