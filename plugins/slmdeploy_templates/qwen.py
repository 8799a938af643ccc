"""The Qwen family (Qwen2, Qwen2.5, Qwen3): ChatML turns; Qwen2.5 adds a default system prompt, which the
parity check finds in the chat template and keeps."""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, hookimpl
from slmdeploy_templates.chatml import ChatMLFamily

QWEN_TYPES = ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")


class QwenFamily(ChatMLFamily):
    """ChatML, claimed for Qwen models by name so that their builds say which family they are."""

    PLUGIN_NAME = "qwen"


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [QwenFamily]


@hookimpl(tryfirst=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    qwen = model.model_type in QWEN_TYPES or any(name.startswith("Qwen") for name in model.architectures)
    return QwenFamily.PLUGIN_NAME if qwen and "<|im_start|>" in (model.chat_template or "") else None
