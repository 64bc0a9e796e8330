"""Chat templates for SFT and DPO: keep the base model's, mark its assistant turns, never add a token.

* A model **with** a chat template keeps it: the saved tokenizer carries it unchanged. For training,
  trl's assistant-only loss needs ``{% generation %}`` markers around the assistant turns
  (transformers' ``return_assistant_tokens_mask``). :func:`training_template` returns a template that
  renders *exactly* the same text with the markers added: the base's own when it has them, trl's
  training variant for the families trl knows (Llama-3, Qwen, Gemma, Phi, ...), or, for ChatML templates
  (SmolLM2, the test tokenizers), a ChatML template rebuilt with the base's default system prompt. Each
  candidate is checked by rendering probe conversations against the base template, so a template that
  would render differently is never used; a template none of them matches is a UserError that asks for
  ``chat_template: FILE.jinja``.
* A model **without** one gets SambaLingo's plain-text format (``<|user|>\\n{q}</s>\\n<|assistant|>\\n``,
  with the tokenizer's own EOS for ``</s>``), which is text: ``<|user|>`` is spelled with existing
  tokens, so the vocabulary (and the extended embedding matrix) stays as it is. trl's
  ``clone_chat_template`` is never called: it adds tokens and resizes the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langadapt.errors import UserError
from langadapt.tokenizer.document import document_start

ROLES = ("system", "user", "assistant")
"""Message roles a chat record may use (tool calls are not supported)."""

_PROBES = [
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}],
    [{"role": "user", "content": "Q1"}],
]  # fmt: skip


def _literal(text: str) -> str:
    """A Jinja string literal of ``text`` (JSON escapes are valid Jinja escapes)."""
    return json.dumps(text)


def sambalingo_template(tokenizer: Any) -> str:
    """SambaLingo's chat format as a template with ``{% generation %}`` markers, in existing tokens only.

    ``<|role|>\\n{content}EOS\\n`` per turn, ``<|assistant|>\\n`` as the generation prompt; the EOS that ends
    an assistant turn is inside the markers, so the model learns to stop. The tokenizer's document-start
    token (Llama-2's ``<s>``) leads when the tokenizer adds one itself to plain text."""
    eos = tokenizer.eos_token
    if not eos:
        raise UserError("the tokenizer has no EOS token to end a chat turn with")
    start = document_start(tokenizer)
    bos = start.token if start.rule == "tokenizer prefix" else ""
    return (
        (f"{{{{- {_literal(bos)} }}}}" if bos else "")
        + "{%- for message in messages %}{%- if message['role'] == 'assistant' %}{{- '<|assistant|>\\n' }}"
        f"{{%- generation %}}{{{{- message['content'] + {_literal(eos)} }}}}{{%- endgeneration %}}{{{{- '\\n' }}}}"
        f"{{%- else %}}{{{{- '<|' + message['role'] + '|>\\n' + message['content'] + {_literal(eos)} + '\\n' }}}}"
        "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
    )


def _chatml_template(default_system: str) -> str:
    """ChatML with markers around each assistant reply and its ``<|im_end|>``; ``default_system`` is the
    block the base template puts first when a conversation has no system message ('' for none)."""
    head = (f"{{%- if messages[0]['role'] != 'system' %}}{{{{- {_literal(default_system)} }}}}{{%- endif %}}"
            if default_system else "")  # fmt: skip
    return (
        head + "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{%- generation %}{{- message['content'] + '<|im_end|>' }}"
        "{%- endgeneration %}{{- '\\n' }}{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], prompt: bool = False) -> str | None:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)  # fmt: skip
    except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError):
        # a template may reject a probe (e.g. one that needs a system turn): not a match
        return None


def renders_like(tokenizer: Any, candidate: str, base: str) -> bool:
    """``candidate`` renders every probe conversation (with and without a generation prompt) as ``base``."""
    for messages in _PROBES:
        for prompt in (False, True):
            want = _render(tokenizer, base, messages, prompt)
            if want is None or _render(tokenizer, candidate, messages, prompt) != want:
                return False
    return True


def _chatml_default_system(tokenizer: Any, base: str) -> str | None:
    """The system block a ChatML ``base`` adds to a conversation without one ('' for none); None when
    ``base`` is not ChatML."""
    text = _render(tokenizer, base, _PROBES[0][:2])
    body = "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
    if text is None or not text.endswith(body):
        return None
    head = text[: -len(body)]
    if head and not (head.startswith("<|im_start|>system\n") and head.endswith("<|im_end|>\n")):
        return None
    return head


def training_template(tokenizer: Any, override: str | Path | None = None) -> tuple[str, str]:
    """(a template with ``{% generation %}`` markers that renders as the tokenizer's own, how it was made).

    ``override``: a Jinja file to use as it is (it must have the markers). A tokenizer without a template
    gets :func:`sambalingo_template`; set it as the tokenizer's template first (:func:`ensure_template`)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if override:
        path = Path(override)
        if not path.is_file():
            raise UserError("chat template file not found", path)
        template = path.read_text(encoding="utf-8")
        if not has_generation_markers(template):
            raise UserError("chat template has no {% generation %} ... {% endgeneration %} around the assistant "
                            "replies (assistant-only loss needs them)", path)  # fmt: skip
        return template, f"file {path}"
    base = tokenizer.chat_template
    if isinstance(base, dict):
        base = base.get("default")
    if not base:
        raise ValueError("set a chat template first (ensure_template)")
    if has_generation_markers(base):
        return base, "base (has generation markers)"
    try:
        trl_template = get_training_chat_template(tokenizer)
    except ValueError:  # a family trl does not know
        trl_template = None
    if trl_template and renders_like(tokenizer, trl_template, base):
        return trl_template, "trl training variant of the base template"
    default_system = _chatml_default_system(tokenizer, base)
    if default_system is not None:
        chatml = _chatml_template(default_system)
        if renders_like(tokenizer, chatml, base):
            return chatml, "ChatML with generation markers (renders as the base template)"
    raise UserError("the model's chat template has no {% generation %} markers and is not one langadapt or trl "
                    "can mark; give chat_template: a .jinja file of the same template with {% generation %} ... "
                    "{% endgeneration %} around each assistant reply", getattr(tokenizer, "name_or_path", None))


def ensure_template(tokenizer: Any) -> str:
    """Give a tokenizer without a chat template SambaLingo's (no token added); returns which it has."""
    if tokenizer.chat_template:
        return "base"
    tokenizer.chat_template = sambalingo_template(tokenizer)
    return "sambalingo"
