"""Run inside llama.cpp's converter process (``python converter_main.py LLAMA_CPP_ROOT MODE ...``): never imported.

It puts llama.cpp's folder and its vendored ``gguf-py`` first on ``sys.path`` (the registry's ``gguf``,
installed with langadapt, is older than the converter expects), then:

* ``probe MODEL [--base BASE]``: the model's architecture and whether the converter's own registry
  knows it; the BPE pre-tokenizer name the converter's own ``get_vocab_base_pre`` gives the model's
  tokenizer and the base's (null when it does not recognise one).
* ``convert MODEL [--base BASE] [--first-new ID] -- CONVERTER ARGS``: the probe, then (the architecture
  known) ``convert_hf_to_gguf.main()``, where ``get_vocab_base_pre`` answers the base's name when the
  converter recognises the base (appending tokens and merges does not change the split regex, but changes
  the ids of the converter's test string, which it hashes to identify the pre-tokenizer). Then the
  written file's tokenizer metadata is read back with gguf-py. One process: importing the converter
  (torch, transformers) costs seconds.

The result is one line ``LANGADAPT-JSON {...}`` on stdout; the converter's own log goes to stderr.
"""

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

MARK = "LANGADAPT-JSON "


def _paths(root: Path) -> None:
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "gguf-py"))


def _pre_name(cls, folder: Path):
    """The converter's pre-tokenizer name for the tokenizer in ``folder`` (None: not recognised)."""
    if not (folder / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    quiet = logging.getLogger("hf-to-gguf")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its "not recognized" banner: the caller reports it in one line
    try:
        return cls.get_vocab_base_pre(None, tokenizer)
    except NotImplementedError:
        return None
    finally:
        quiet.setLevel(level)


def probe(args: argparse.Namespace) -> dict:
    from conversion import (
        TEXT_MODEL_MAP,
        ModelBase,
        ModelType,
        TextModel,
        get_model_architecture,
        get_model_class,
    )

    model = Path(args.model)
    hparams = ModelBase.load_hparams(model, False)
    try:
        arch = get_model_architecture(hparams, ModelType.TEXT)
    except ValueError:
        arch = None
    known = arch in TEXT_MODEL_MAP
    cls = get_model_class(arch) if known else TextModel
    result = {"architecture": arch, "known": known, "model_class": cls.__name__, "pre": _pre_name(cls, model)}
    if args.base:
        result["base_pre"] = _pre_name(cls, Path(args.base))
    return result


def convert(args: argparse.Namespace, converter_args: list) -> dict:
    """Probe, then (architecture known) convert with the base's pre-tokenizer name when it has one."""
    found = probe(args)
    if not found["known"]:
        return {"probe": found}
    import convert_hf_to_gguf
    from conversion.base import TextModel

    asked = []
    pre = found.get("base_pre")
    if pre:
        def get_vocab_base_pre(self, tokenizer):
            asked.append(True)
            return pre

        TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", args.model, *converter_args]
    convert_hf_to_gguf.main()
    out = Path(converter_args[converter_args.index("--outfile") + 1])
    return {"probe": found, "pre_override_used": bool(asked), **read_back(out, args.first_new)}


def read_back(path: Path, first_new) -> dict:
    """The tokenizer metadata the converter wrote (and the token types of the new ids)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    tokens = value("tokenizer.ggml.tokens") or []
    types = value("tokenizer.ggml.token_type") or []
    names = {int(t): t.name for t in gguf.TokenType}
    result = {
        "tokenizer_model": value("tokenizer.ggml.model"),
        "pre_tokenizer": value("tokenizer.ggml.pre"),
        "n_tokens": len(tokens),
        "add_bos": value("tokenizer.ggml.add_bos_token"),
        "bos_id": value("tokenizer.ggml.bos_token_id"),
        "token_types": dict(Counter(names.get(int(t), str(t)) for t in types)),
        "architecture": value("general.architecture"),
        "file_type": value("general.file_type"),
    }
    if first_new is not None:
        new_types = Counter(names.get(int(t), str(t)) for t in types[first_new:])
        result["new_token_types"] = dict(new_types)
        result["new_pad_ids"] = [first_new + i for i, t in enumerate(tokens[first_new:]) if str(t).startswith("[PAD")]
    return result


def main() -> None:
    root = Path(sys.argv[1])
    _paths(root)
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["probe", "convert"])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--base")
    parser.add_argument("--first-new", type=int)
    argv = sys.argv[2:]
    rest = []
    if "--" in argv:
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    result = probe(args) if args.mode == "probe" else convert(args, rest)
    sys.stdout.write(MARK + json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
