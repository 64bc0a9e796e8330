"""``data make-chat``: a small instruction set and preference set from monolingual and parallel text
(GitHub issue 11's chat demo).

Real alignment data (SambaLingo: ultrachat_200k and its machine translation for SFT, ultrafeedback +
cai-conversation-harmless with ~10% translated for DPO) is not something a package can ship. This stage
makes *demonstration* data with the same shape from text that is already there, so that SFT and DPO can
run and be measured end to end offline:

* **Translation tasks** from the parallel pairs: "Translate into {tgt_name}: {en}" answered with the
  target side, and "Translate into English: {tgt}" answered with the English side.
* **Heading tasks** from documents whose first paragraph is a heading (help pages, wiki articles): the
  heading asks for the paragraph under it. English documents give English items (and the part handed to
  ``data translate``), target-language documents give native items (with ``heading_prompt_tgt`` when it
  is set, the English wording otherwise).
* **Preferences**: the same prompts; chosen = the right answer, rejected = a wrong one: another pair's
  translation of similar length or the right paragraph with its words shuffled (seeded), and for every
  other item the right answer degenerating into a loop of its first words (the failure small adapted
  models show: "a kijelölt vagy a kijelölt vagy ..."). The
  translation and English heading items are the English set, the native heading items the target set.
* **Held out**: preference items and chat translation pairs from the held-out pairs, and
  target-language heading prompts from the held-out documents, for ``eval chat``.

Every file is chat jsonl (``{"messages": [...]}``) or conversational preference jsonl (``{"prompt":
[...], "chosen": [...], "rejected": [...]}``), the formats ``train sft`` / ``train dpo`` and trl read.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from langadapt.config import MakeChatConfig
from langadapt.corpus.readers import check_corpus, iter_documents, read_pairs
from langadapt.errors import UserError
from langadapt.runs import write_jsonl_atomic

FILES = {
    "sft_english": "sft-english.jsonl",
    "sft_target": "sft-target.jsonl",
    "to_translate": "to-translate.jsonl",
    "preferences_english": "preferences-english.jsonl",
    "preferences_target": "preferences-target.jsonl",
    "heldout_preferences": "heldout-preferences.jsonl",
    "heldout_pairs": "heldout-pairs.jsonl",
    "heldout_prompts": "heldout-prompts.jsonl",
}
"""What the stage writes, by role (the recipe runner wires these into train sft / dpo and eval chat)."""
MAX_ANSWER_CHARS = 400


def headed_paragraphs(docs: list[str], min_chars: int = 60) -> list[tuple[str, str]]:
    """(heading, the first paragraph after it) of each document whose first paragraph is a heading: a line
    under 80 characters that does not end a sentence. The paragraph is cut at a sentence end before
    :data:`MAX_ANSWER_CHARS` where it is longer."""
    out = []
    for doc in docs:
        paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
        if len(paragraphs) < 2 or len(paragraphs[0]) >= 80 or paragraphs[0][-1:] in ".!?:":
            continue
        body = next((p for p in paragraphs[1:] if len(p) >= min_chars), None)
        if body is None:
            continue
        if len(body) > MAX_ANSWER_CHARS:
            end = max(body.rfind(". ", 0, MAX_ANSWER_CHARS), body.rfind("? ", 0, MAX_ANSWER_CHARS))
            body = body[: end + 1] if end >= min_chars else body[:MAX_ANSWER_CHARS].rsplit(" ", 1)[0]
        out.append((paragraphs[0], body))
    return out


def chat(user: str, assistant: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def preference(user: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": user}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip


def shuffled(text: str, rng: random.Random) -> str:
    """The words of ``text`` in a seeded random order (never the original order when there are 3+)."""
    words = text.split()
    for _ in range(10):
        rng.shuffle(words)
        if words != text.split() or len(words) < 3:
            break
    return " ".join(words)


def looped(text: str) -> str:
    """The degenerate answer small models fall into: the first words of ``text`` repeated to its length."""
    words = text.split()
    head = words[: max(2, len(words) // 5)]
    return " ".join((head * (len(words) // len(head) + 1))[: max(len(words), 2 * len(head))])


def wrong_answer(answers: list[str], i: int, rng: random.Random) -> str:
    """Another answer of similar length (among the 8 closest in characters), never answer ``i`` itself."""
    target = len(answers[i])
    others = sorted((abs(len(a) - target), j) for j, a in enumerate(answers) if a.strip() != answers[i].strip())
    if not others:
        raise UserError("every answer is the same text: no wrong answer to pair with it")
    return answers[rng.choice(others[:8])[1]]


def translation_items(pairs: list[dict[str, str]], src: str, tgt: str, tgt_name: str, cfg: MakeChatConfig,
                      rng: random.Random) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(chat items, preference items) of the translation tasks in both directions."""
    chats, prefs = [], []
    to_tgt = [p[tgt] for p in pairs]
    to_src = [p[src] for p in pairs]
    for i, p in enumerate(pairs):
        forward = cfg.translate_prompt.format(lang=tgt_name, text=p[src])
        backward = cfg.translate_prompt.format(lang="English", text=p[tgt])
        chats += [chat(forward, p[tgt]), chat(backward, p[src])]
        # rejected: every other item a wrong translation, the others the right one looping
        bad_tgt = wrong_answer(to_tgt, i, rng) if i % 2 else looped(p[tgt])
        bad_src = wrong_answer(to_src, i, rng) if i % 2 else looped(p[src])
        prefs += [preference(forward, p[tgt], bad_tgt), preference(backward, p[src], bad_src)]
    return chats, prefs


def heading_items(headed: list[tuple[str, str]], template: str,
                  rng: random.Random) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(chat items, preference items) asking for the paragraph under each heading."""
    chats, prefs = [], []
    for i, (heading, body) in enumerate(headed):
        prompt = template.format(heading=heading)
        chats.append(chat(prompt, body))
        prefs.append(preference(prompt, body, shuffled(body, rng) if i % 2 else looped(body)))
    return chats, prefs


def make_chat(cfg: MakeChatConfig, out: Path) -> dict[str, Any]:
    """Stage entry (``data make-chat``): write the demonstration instruction and preference files."""
    if not cfg.tgt:
        raise UserError("data make-chat needs --tgt (the parallel file's target-language field)")
    if not cfg.pairs or not cfg.target or not cfg.english or not cfg.target_heldout:
        raise UserError("data make-chat needs --pairs, --target, --english and --target-heldout text")
    tgt_name = cfg.tgt_name or cfg.tgt
    rng = random.Random(cfg.seed)
    pairs = read_pairs(cfg.pairs, cfg.src, cfg.tgt, None)
    train_pairs = [p for p in pairs if p.get("split", "train") != cfg.heldout_split]
    held_pairs = [p for p in pairs if p.get("split") == cfg.heldout_split]
    if len(train_pairs) < 2 or len(held_pairs) < 2:
        raise UserError(f"needs 2+ pairs of split {cfg.heldout_split!r} and 2+ of the others", cfg.pairs)
    rng.shuffle(train_pairs)
    rng.shuffle(held_pairs)

    def headed(files: list[str], n: int) -> list[tuple[str, str]]:
        docs = list(iter_documents(check_corpus(files, cfg.text_field), cfg.text_field, 20 * n))
        found = headed_paragraphs(docs)
        if not found:
            raise UserError("no document starts with a heading followed by a paragraph", files[0])
        return found

    english_headed = headed(cfg.english, cfg.heading_items)
    target_headed = headed(cfg.target, cfg.heading_items)
    heldout_headed = headed(cfg.target_heldout, cfg.heldout_items)
    tgt_template = cfg.heading_prompt_tgt or cfg.heading_prompt
    n = cfg.translation_items
    tr_chats, tr_prefs = translation_items(train_pairs[:n], cfg.src, cfg.tgt, tgt_name, cfg, rng)
    en_chats, en_prefs = heading_items(english_headed[: cfg.heading_items], cfg.heading_prompt, rng)
    tg_chats, tg_prefs = heading_items(target_headed[: cfg.heading_items], tgt_template, rng)
    _, held_prefs = translation_items(held_pairs[: cfg.heldout_items], cfg.src, cfg.tgt, tgt_name, cfg, rng)
    held_prompts = [{"lang": cfg.tgt, "prompt": tgt_template.format(heading=h)}
                    for h, _ in heldout_headed[: cfg.heldout_items]]  # fmt: skip
    files = {
        "sft_english": en_chats + tr_chats,
        "sft_target": tg_chats,
        "to_translate": en_chats,
        "preferences_english": tr_prefs + en_prefs,
        "preferences_target": tg_prefs,
        "heldout_preferences": held_prefs,
        "heldout_pairs": [{cfg.src: p[cfg.src], cfg.tgt: p[cfg.tgt]} for p in held_pairs[: cfg.heldout_items]],
        "heldout_prompts": held_prompts,
    }
    for role in ("sft_english", "preferences_english"):  # the task kinds mixed, in a seeded order
        rng.shuffle(files[role])
    for role, items in files.items():
        write_jsonl_atomic(out / FILES[role], items)
    return {"items": {FILES[role]: len(items) for role, items in files.items()}}
