"""Configs of the data stages (``data pack``, ``data translate``, ``data make-chat``)."""

from __future__ import annotations

from dataclasses import dataclass

from langadapt.config.base import (
    ConfigError,
    Runtime,
    TextField,
    check_choice,
    check_generation_cap,
    check_two_sides,
    path,
    paths,
)


@dataclass(kw_only=True)
class PackConfig(TextField):
    tokenizer: str = path()
    """Tokenizer folder or model alias."""
    target: list[str] = paths()
    """Target-language text."""
    english: list[str] = paths()
    """English text."""
    ratio: float = 0.75
    """Share of target-language tokens (SambaLingo 0.75, DictaLM 0.5)."""
    seq_len: int = 2048
    """Tokens per packed row."""
    tokens: int = 1_000_000
    """Token budget of the packed dataset."""
    max_epochs: float = 4.0
    """How many passes over a source the mix may use before running out is an error (>= 1)."""
    seed: int = 0
    """Seed for document order."""
    workers: int = 2
    """Tokenizer worker processes (<= 1: tokenize in the main process)."""
    shuffle_buffer: int = 4096
    """Documents held in the bounded shuffle buffer of each source (memory does not grow with input)."""

    def validate(self) -> None:
        if not 0 < self.ratio < 1:
            raise ConfigError(f"ratio must be between 0 and 1 (exclusive), not {self.ratio}")
        if self.seq_len <= 1 or self.tokens <= 0:
            raise ConfigError("seq_len must be > 1 and tokens > 0")
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be >= 1 (one full pass), not {self.max_epochs}")
        if self.shuffle_buffer < 1:
            raise ConfigError("shuffle_buffer must be >= 1")


@dataclass(kw_only=True)
class DataTranslateConfig(Runtime):
    input: list[str] = paths()
    """Chat or preference jsonl[.gz] files (globs allowed) to translate."""
    kind: str = "auto"
    """chat ({"messages": [{"role", "content"}, ...]}), preference ({"prompt", "chosen", "rejected"}, plain
    text or message lists) or auto (decided by each file's first item)."""
    translator: str = path()
    """Local model folder that translates: a causal LM or a seq2seq MT model (Marian, NLLB, M2M100, MADLAD)."""
    translator_kind: str = "auto"
    """causal, seq2seq or auto (seq2seq when config.json says is_encoder_decoder)."""
    back_translator: str = path()
    """Model folder for the round trip, tgt to src (empty: the translator; a one-pair Marian model needs its
    reverse model here)."""
    backend: str = "auto"
    """transformers, vllm (causal translators; pip install 'langadapt[vllm]', a CUDA GPU) or auto (vllm when
    it is installed and CUDA is present, else transformers)."""
    src: str = "en"
    """Language code of the input."""
    tgt: str = ""
    """Language code to translate into (recipe: the recipe's target_lang)."""
    pairs: str = path()
    """Parallel jsonl[.gz] with a src and a tgt field: the few-shot examples of a causal translator (its
    train / dev split where the file has a split field)."""
    prompt: str = "few-shot"
    """Causal translators: few-shot (eval translate's "{src} = {tgt}" prompt, shots from pairs) or chat (the
    translator's chat template with chat_instruction)."""
    shots: int = 4
    """Few-shot examples per prompt (the same seeded ones for every text of a direction)."""
    chat_instruction: str = ("Translate the following text from {src} to {tgt}. Keep every marker such as "
                             "⟦1⟧ unchanged. Reply with the translation only.\n\n{text}")
    """The user turn of the chat prompt ({src}, {tgt}: language codes; {text}: the text)."""
    src_tag: str = ""
    """A multilingual seq2seq model's code for src: NLLB eng_Latn, M2M100 en, MADLAD <2en> (empty: none)."""
    tgt_tag: str = ""
    """Its code for tgt: NLLB hun_Latn, M2M100 hu, MADLAD <2hu> (empty: a one-pair model such as Marian)."""
    batch_size: int = 8
    """Items per batch (flushed to the work folder together); texts generated at once."""
    max_new_tokens_factor: float = 2.0
    """Generated tokens at most: ceil(factor x the source text's tokens in the translator's tokenizer) + extra."""
    max_new_tokens_extra: int = 8
    """Added to the generation cap (see max_new_tokens_factor)."""
    min_script_ratio: float = 0.6
    """Share of a translation's letters that must be in tgt's script(s) (corpus prepare's measure)."""
    language_id: bool = True
    """Drop items whose translations py3langid does not identify as tgt (texts of langid_min_letters or more)."""
    langid_min_letters: int = 20
    """Translations with fewer letters are not language-identified (too short to tell)."""
    min_length_ratio: float = 0.4
    """Lowest translation / source length in characters (protected spans left out; sources of 20+ only)."""
    max_length_ratio: float = 2.5
    """Highest translation / source length in characters."""
    round_trip: bool = True
    """Translate every kept translation back and drop items below min_round_trip_chrf."""
    min_round_trip_chrf: float = 30.0
    """Lowest sentence chrF (sacrebleu) of a back-translation against its source, 0-100."""
    max_items: int | None = None
    """Items translated, the first ones of the input (None: all)."""
    seed: int = 0
    """Seed for the few-shot examples."""

    def validate(self) -> None:
        check_choice("kind", self.kind, ("auto", "chat", "preference"))
        check_choice("translator_kind", self.translator_kind, ("auto", "causal", "seq2seq"))
        check_choice("backend", self.backend, ("auto", "transformers", "vllm"))
        check_choice("prompt", self.prompt, ("few-shot", "chat"))
        check_two_sides(self.src, self.tgt, "languages")
        if not 0 <= self.min_script_ratio <= 1:
            raise ConfigError(f"min_script_ratio must be in [0, 1], not {self.min_script_ratio}")
        if not 0 <= self.min_length_ratio <= self.max_length_ratio:
            raise ConfigError("min_length_ratio must be >= 0 and at most max_length_ratio")
        if not 0 <= self.min_round_trip_chrf <= 100:
            raise ConfigError(f"min_round_trip_chrf must be in [0, 100], not {self.min_round_trip_chrf}")
        if self.shots < 0 or self.langid_min_letters < 0:
            raise ConfigError("shots and langid_min_letters must be >= 0")
        if self.batch_size <= 0 or (self.max_items is not None and self.max_items <= 0):
            raise ConfigError("batch_size must be > 0 and max_items > 0 (or None: all)")
        check_generation_cap(self.max_new_tokens_factor, self.max_new_tokens_extra)


@dataclass(kw_only=True)
class MakeChatConfig(TextField):
    pairs: str = path()
    """Parallel jsonl[.gz] (a field per language code, optionally "split"): the translation tasks."""
    target: list[str] = paths()
    """Target-language documents (training text): the native heading-to-paragraph tasks."""
    english: list[str] = paths()
    """English documents (training text): the English heading tasks, also the part to translate."""
    target_heldout: list[str] = paths()
    """Held-out target-language documents: the headings of eval chat's fixed prompts."""
    src: str = "en"
    """Field (language code) of the English side of the pairs."""
    tgt: str = ""
    """Field (language code) of the target side (recipe: the recipe's target_lang)."""
    tgt_name: str = ""
    """The target language's name in the English prompts, e.g. Hungarian (empty: the code)."""
    translate_prompt: str = "Translate into {lang}: {text}"
    """User turn of a translation task ({lang}: the language to translate into, {text}: the sentence)."""
    heading_prompt: str = "Write the paragraph that follows this heading: {heading}"
    """User turn of a heading task ({heading}) for English documents."""
    heading_prompt_tgt: str = ""
    """The same for target-language documents, in the target language (empty: heading_prompt)."""
    translation_items: int = 64
    """Training pairs made into tasks (each gives one task per direction)."""
    heading_items: int = 64
    """Heading tasks per language."""
    heldout_items: int = 24
    """Held-out preference pairs, chat translation pairs and target-language prompts for eval chat."""
    heldout_split: str = "valid"
    """Pairs whose "split" is this are held out; the others are training material."""
    seed: int = 0
    """Seed for the sample, the wrong answers and the order."""

    def validate(self) -> None:
        if min(self.translation_items, self.heading_items, self.heldout_items) <= 0:
            raise ConfigError("translation_items, heading_items and heldout_items must be > 0")
        check_two_sides(self.src, self.tgt)
