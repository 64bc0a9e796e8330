"""Which writing systems a language uses, the share of a text's letters written in them, and words.

Script membership comes from the Unicode Script property (``regex``'s ``\\p{Script=...}``), so a Hungarian
"ő" counts as Latin and a Japanese "ー" as Katakana without a hand-kept range table. Languages missing
from :data:`LANG_SCRIPTS` and from py3langid's model are unknown: a :class:`UserError`, not a guess.
"""

from __future__ import annotations

import functools

import regex
from datatrove.utils.word_tokenizers import WordTokenizer

from langadapt.errors import UserError

# Scripts per ISO 639-1/3 code, for every language py3langid knows that is not written in Latin, plus a few
# more. Languages written in two scripts (Serbian, Uzbek, Kurdish) list both.
_NON_LATIN: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(["ba", "be", "bg", "kk", "ky", "mk", "mn", "ru", "tg", "tt", "uk", "cv", "os"], ("Cyrillic",)),
    **dict.fromkeys(["sr", "uz"], ("Cyrillic", "Latin")),
    **dict.fromkeys(["ar", "ary", "arz", "fa", "ps", "sdh", "ug", "ur", "ckb", "sd"], ("Arabic",)),
    "ku": ("Latin", "Arabic"),
    **dict.fromkeys(["he", "hbo", "yi"], ("Hebrew",)),
    **dict.fromkeys(["el", "grc"], ("Greek",)),
    **dict.fromkeys(["hi", "mr", "ne", "sa", "gom", "mai", "bho"], ("Devanagari",)),
    **dict.fromkeys(["bn", "as"], ("Bengali",)),
    "pa": ("Gurmukhi",), "gu": ("Gujarati",), "or": ("Oriya",), "ta": ("Tamil",), "te": ("Telugu",),
    "kn": ("Kannada",), "ml": ("Malayalam",), "si": ("Sinhala",), "th": ("Thai",), "lo": ("Lao",),
    "km": ("Khmer",), "my": ("Myanmar",), "dz": ("Tibetan",), "bo": ("Tibetan",), "ka": ("Georgian",),
    "hy": ("Armenian",), "am": ("Ethiopic",), "ti": ("Ethiopic",), "dv": ("Thaana",),
    "ja": ("Han", "Hiragana", "Katakana"),
    **dict.fromkeys(["zh", "wuu", "yue"], ("Han",)),
    "ko": ("Hangul", "Han"),
}  # fmt: skip

# Scripts written without spaces between words: a "word" there is a character (see ScriptWordTokenizer).
UNSPACED = {"Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan"}
_UNSPACED_RE = regex.compile(r"[" + "".join(rf"\p{{Script={s}}}" for s in sorted(UNSPACED)) + r"]")
_WORD_RE = regex.compile(_UNSPACED_RE.pattern + r"|[\w\p{M}]+")  # \p{M}: keep combining marks in the word
_LETTER_RE = regex.compile(r"\p{L}+")


@functools.lru_cache(maxsize=1)
def langid_model():
    """py3langid's model, shipped inside its wheel; loaded once per process (about 0.5–1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def langid_languages() -> frozenset[str]:
    """The codes py3langid's model can identify ("zxx", no language, is not one)."""
    return frozenset(langid_model().nb_classes) - {"zxx"}


def scripts_for(lang: str) -> tuple[str, ...]:
    """The scripts ``lang`` is written in; a UserError for a code neither table nor model knows."""
    if lang in _NON_LATIN:
        return _NON_LATIN[lang]
    if lang in langid_languages() or lang in _EXTRA_LATIN:
        return ("Latin",)
    raise UserError(f"unknown language code {lang!r} (use an ISO 639-1 code such as hu, ru, he, th, ja)")


# Latin-script languages outside py3langid's model that a user may still target with language_id off.
_EXTRA_LATIN = {
    "fil",
    "haw",
    "mi",
    "sm",
    "to",
    "fj",
    "gv",
    "kw",
    "rm",
    "sc",
    "co",
    "fur",
    "lad",
    "szl",
    "hsb",
}


def is_unspaced(lang: str) -> bool:
    return any(s in UNSPACED for s in scripts_for(lang))


def script_pattern(scripts: tuple[str, ...]) -> regex.Pattern:
    """Runs of letters written in any of ``scripts``."""
    parts = "".join(rf"\p{{Script={s}}}" for s in scripts)
    return regex.compile(rf"[{parts}]+")


def script_ratio(text: str, pattern: regex.Pattern) -> tuple[float, int]:
    """(share of letters matching ``pattern``, number of letters); 0 letters gives ratio 0."""
    # Runs, not single characters: a word is one match, so this is ~5x faster than counting characters.
    letters = sum(map(len, _LETTER_RE.findall(text)))
    if not letters:
        return 0.0, 0
    return sum(map(len, pattern.findall(text))) / letters, letters


def words(text: str) -> list[str]:
    """Runs of word characters; every character of an unspaced script is a word of its own."""
    return _WORD_RE.findall(text)


def word_count(text: str, unspaced: bool) -> int:
    """Words for spaced scripts; for unspaced ones, letters / 2 (about one word per two characters in
    Japanese, Chinese and Thai text), so one ``min_words`` suits both."""
    found = words(text)
    return len(found) // 2 if unspaced else len(found)


class ScriptWordTokenizer(WordTokenizer):
    """datatrove word tokenizer for any script, with no model to download (datatrove's own ones need spaCy,
    NLTK data or pythainlp). Passed as ``language=`` to datatrove's Gopher filters and MinHash stage."""

    def __init__(self) -> None:
        super().__init__("xx")

    def word_tokenize(self, text: str) -> list[str]:
        return words(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in regex.split(r"(?<=[.!?。！？])\s+|\n+", text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for sent in self.sent_tokenize(text):
            start = text.index(sent, start)
            spans.append((start, start + len(sent)))
            start += len(sent)
        return spans
