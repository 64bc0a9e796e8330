"""Config of the export stage (``export gguf``)."""

from __future__ import annotations

from dataclasses import dataclass

from langadapt.config.base import ConfigError, TextField, check_choice, check_max, path, paths

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
"""GGUF tensor types llama.cpp's converter writes that export offers."""
EXACT_OUTTYPES = ("f32", "f16")
"""Outtypes whose bits per byte must match transformers' within bpb_tolerance (bf16 and q8_0: reported)."""


@dataclass(kw_only=True)
class ExportConfig(TextField):
    model: str = path()
    """Hugging Face model folder to export (recipe: the run's final model, the last aligned one if any)."""
    outtype: str = "f16"
    """GGUF tensor type: f32, f16, bf16 or q8_0 (written by llama.cpp's converter)."""
    llama_cpp: str = path()
    """llama.cpp's converter: the llama-cpp-python source archive (.tar.gz), its extracted folder or a llama.cpp
    checkout (empty: $LANGADAPT_LLAMA_CPP, else an archive extracted earlier into $LANGADAPT_CACHE/llama.cpp)."""
    llama_lib: str = path()
    """llama.cpp runtime library for the check: a libllama file or its folder (empty: $LLAMA_CPP_LIB_PATH, an
    installed xllamacpp wheel, an installed llama-cpp-python)."""
    verify: str = "auto"
    """Check the GGUF in a real llama.cpp runtime: auto (when one is found), require (no runtime is an error)
    or off."""
    verify_target: list[str] = paths()
    """Held-out target-language text for the check (recipe: data.target_valid)."""
    verify_english: list[str] = paths()
    """Held-out English text for the check (recipe: data.english_valid)."""
    tokenize_docs: int | None = 200
    """Documents per corpus whose llama.cpp and transformers tokenizations are compared id for id (None: all)."""
    bpb_docs: int = 8
    """Documents per corpus scored for bits per byte in both runtimes."""
    max_doc_chars: int = 2000
    """Each scored document cut to its first max_doc_chars characters at a word boundary (one context)."""
    bpb_tolerance: float = 0.005
    """Largest relative bits-per-byte difference from transformers accepted for f32 and f16."""
    prompts: int = 2
    """Prompts per corpus for the greedy-continuation check: the openings of its first documents."""
    max_new_tokens: int = 16
    """Tokens generated greedily per prompt in both runtimes."""
    threads: int | None = None
    """CPU threads for llama.cpp (None: all cores)."""

    def validate(self) -> None:
        check_choice("outtype", self.outtype, OUTTYPES)
        check_choice("verify", self.verify, ("auto", "require", "off"))
        check_max("tokenize_docs", self.tokenize_docs)
        check_max("threads", self.threads, "all cores")
        if self.bpb_docs < 0 or self.prompts < 0 or self.max_new_tokens <= 0 or self.max_doc_chars <= 0:
            raise ConfigError("bpb_docs and prompts must be >= 0, max_new_tokens and max_doc_chars > 0")
        if not 0 < self.bpb_tolerance < 1:
            raise ConfigError("bpb_tolerance must be between 0 and 1")
