"""Tiny hermetic fixtures: tokenizers trained in-process and 2-layer random models built from config.

Shared by every test module (imported from conftest.py). Nothing here touches the hub or ../shared:
the text comes from the demo corpus packaged with langadapt.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parents[1] / "src" / "langadapt" / "demo_data"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def demo_texts(lang: str, split: str = "train", n: int = 200) -> list[str]:
    with gzip.open(DEMO_DATA / f"{lang}-{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in itertools.islice(fh, n)]


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({field: t}, ensure_ascii=False) + "\n" for t in texts)
    return path


def _save(tok, out: Path, *, bos: str, eos: str, pad: str, unk: str | None) -> Path:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
        model_max_length=2048, chat_template=CHAT_TEMPLATE,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return out


def bytelevel_tokenizer(out: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """GPT-2 / Llama-3 / SmolLM style: byte-level pre-tokenizer and decoder, no normalizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    return _save(tok, out, bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>", unk="<|endoftext|>")


def metaspace_tokenizer(out: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """Llama-2 / Mistral style: SentencePiece BPE with byte fallback and Metaspace (prepend_scheme first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + 256, special_tokens=specials + byte_tokens, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return _save(tok, out, bos="<s>", eos="</s>", pad="</s>", unk="<unk>")


def tiny_model(out: Path, tokenizer_dir: Path, *, tied: bool = True, extra_rows: int = 0,
               hidden: int = 32, seed: int = 0) -> Path:  # fmt: skip
    """A 2-layer random Llama whose vocabulary is the tokenizer's (+ ``extra_rows`` padding rows)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_rows, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=tied, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_stage(name: str, cfg, out: Path) -> dict:
    """Stage ``name`` through the stage runner, as the CLI and recipes run it; stage.json's record."""
    from langadapt.runs import run_stage as run
    from langadapt.stages import BY_NAME

    return run(BY_NAME[name], cfg, out)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def recipe_corpora(folder: Path, hu_texts: list[str], en_texts: list[str], field: str = "text") -> str:
    """Train and valid corpora for a tiny recipe in ``folder``; returns the recipe's ``data:`` section."""
    for name, texts in (("hu", hu_texts), ("en", en_texts)):
        write_jsonl(folder / f"{name}.jsonl", texts[:120], field)
        write_jsonl(folder / f"{name}-valid.jsonl", texts[200:210], field)
    return ("data:\n  target_train: hu.jsonl\n  target_valid: hu-valid.jsonl\n  english_train: en.jsonl\n"
            f"  english_valid: en-valid.jsonl\n  text_field: {field}\n")


# Tiny random models of the families users adapt: (config class, model type, settings that differ from a
# Llama's). Vocabulary and special tokens come from the tokenizer; ``extra_rows`` pads the vocabulary as
# Qwen (151,936 rows for 151,665 tokens), Phi-3 and OLMo 2 do.
FAMILIES = {
    "llama": {},
    "mistral": {"sliding_window": None},  # Mistral v0.3 (v0.1 had a 4096-token window)
    "qwen2": {},
    "qwen3": {"head_dim": None},
    "gemma2": {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "head_dim": None,
               "query_pre_attn_scalar": None, "sliding_window": 4096},
    "gemma3_text": {"head_dim": None, "query_pre_attn_scalar": None, "sliding_window": 512},
    "phi3": {},
    "olmo2": {},
}  # fmt: skip


def family_config(family: str, vocab_size: int, *, hidden: int = 32, tied: bool = False, bos: int | None = None,
                  eos: int | None = None, pad: int | None = None, **overrides):  # fmt: skip
    """A 2-layer config of ``family`` (a key of FAMILIES) with 4 heads of hidden // 4 and 2 KV heads."""
    from transformers import AutoConfig

    settings = {**FAMILIES[family], **overrides}
    head_dim = hidden // 4
    for key in ("head_dim", "query_pre_attn_scalar"):
        if key in settings and settings[key] is None:
            settings[key] = head_dim
    return AutoConfig.for_model(
        family, vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=tied,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **settings,
    )  # fmt: skip


def family_model(out: Path, tokenizer_dir: Path, family: str, *, tied: bool = False, extra_rows: int = 0,
                 hidden: int = 32, seed: int = 0, **overrides) -> Path:  # fmt: skip
    """A 2-layer random model of ``family`` whose vocabulary is the tokenizer's (+ ``extra_rows``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = family_config(family, len(tokenizer) + extra_rows, hidden=hidden, tied=tied,
                           bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                           pad=tokenizer.pad_token_id, **overrides)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
