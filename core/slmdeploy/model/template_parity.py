"""The parity check of a chat template family: each of `PARITY_CONVERSATIONS` rendered with the family's format
and with the tokenizer's jinja ``chat_template`` must be the same text, or the deployed model would be prompted
in a format it was not fine-tuned on."""

from __future__ import annotations

import inspect
from typing import ClassVar, Protocol

from slmdeploy.artifacts import ModelInfo
from slmdeploy.errors import StageError
from slmdeploy.model.tokenizer import TokenizerFiles, render_chat_template

Messages = list[dict[str, str]]
PARITY_CONVERSATIONS: dict[str, Messages] = {
    "system and user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "user only": [{"role": "user", "content": "Hello!"}],
    "multi-turn": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
    # Checks the answer turn on templates that refuse system messages (Gemma 2), where "multi-turn" is skipped.
    "multi-turn without system": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
    "empty content": [{"role": "user", "content": ""}],
    "unicode": [{"role": "user", "content": "Grüße aus 東京 🚀, ¿qué tal?"}],
}


class RendersChat(Protocol):
    """What the check needs of a family (`slmdeploy.model.templating.ChatTemplateFamily` is one)."""

    PLUGIN_NAME: ClassVar[str]

    def has_system_role(self, model: ModelInfo | None = None) -> bool: ...

    def turn(self, role: str, model: ModelInfo) -> str: ...

    def bos_text(self, model: ModelInfo) -> str: ...

    def render(self, messages: Messages, model: ModelInfo, default_system: str | None) -> str: ...


def check_parity(family: RendersChat, model: ModelInfo, template: str, tokenizer: TokenizerFiles) -> None:
    """Render each parity conversation both ways; fail with both renderings on the first difference."""
    system_role = _has_system_role(family, model)
    default_system = detect_default_system(family, model, template, tokenizer) if system_role else None
    for name, messages in PARITY_CONVERSATIONS.items():
        if not system_role and any(message["role"] == "system" for message in messages):
            continue
        expected = render_chat_template(template, messages, tokenizer.special_tokens, add_generation_prompt=True)
        actual = family.render(messages, model, default_system)
        if expected != actual:
            raise StageError(
                f'the {family.PLUGIN_NAME} family writes the "{name}" conversation differently from the tokenizer\'s '
                "chat_template (both renderings below)",
                fix="The deployed model would be prompted in a format it was not fine-tuned on. Set [template] "
                'family = "derived" to take the format from the chat template itself, or another family that '
                "matches (see `slmdeploy plugins`), or fix the chat_template in tokenizer_config.json.",
                details=side_by_side(expected, actual),
            )


def _has_system_role(family: RendersChat, model: ModelInfo) -> bool:
    """`family.has_system_role(model)`, or ``()`` for families that override it without the model parameter."""
    parameters = inspect.signature(family.has_system_role).parameters
    return family.has_system_role(model) if parameters else family.has_system_role()


def detect_default_system(
    family: RendersChat, model: ModelInfo, template: str, tokenizer: TokenizerFiles
) -> str | None:
    """The system prompt the chat template adds when a conversation has none (Qwen2.5, SmolLM2 do)."""
    before, _, after = family.turn("system", model).partition("{Content}")
    opening = family.bos_text(model) + before
    rendered = render_chat_template(
        template, [{"role": "user", "content": "\x00"}], tokenizer.special_tokens, add_generation_prompt=True
    )
    if not before or not rendered.startswith(opening):
        return None
    end = rendered.find(after, len(opening)) if after else -1
    return rendered[len(opening) : end] if end >= 0 else None


def side_by_side(expected: str, actual: str) -> str:
    """The two renderings, one line per line, marking the lines that differ."""
    left, right = expected.split("\n"), actual.split("\n")
    width = max(12, *(len(repr(line)) for line in left))
    rows = [f"  {'chat_template (expected)':<{width}} | family (what would be deployed)"]
    for index in range(max(len(left), len(right))):
        a = repr(left[index]) if index < len(left) else ""
        b = repr(right[index]) if index < len(right) else ""
        rows.append(f"{'!' if a != b else ' '} {a:<{width}} | {b}")
    return "\n".join(rows)
