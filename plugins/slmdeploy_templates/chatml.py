"""The ChatML family: ``<|im_start|>role\\n...<|im_end|>`` (SmolLM2 and many fine-tunes use it)."""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily


class ChatMLFamily(ChatTemplateFamily):
    PLUGIN_NAME = "chatml"
    TURN = "<|im_start|>{role}\n{Content}<|im_end|>\n"
    GENERATION_PROMPT = "<|im_start|>assistant\n"
    END_TOKENS = ("<|im_end|>",)
    OPTIONAL_END_TOKENS = ("<|endoftext|>",)


def uses_chatml(model: ModelInfo) -> bool:
    return "<|im_start|>" in (model.chat_template or "")


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [ChatMLFamily]


@hookimpl
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    return ChatMLFamily.PLUGIN_NAME if uses_chatml(model) else None
