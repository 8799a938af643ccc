"""The Phi family: ``<|system|>\\n...<|end|>\\n<|user|>\\n...<|end|>\\n<|assistant|>\\n`` (Phi-3, Phi-3.5), and the
same without newlines (Phi-4-mini). Which of the two is read from the chat template."""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily

PHI_TYPES = ("phi3", "phimoe", "phi4", "phi4mm")


class PhiFamily(ChatTemplateFamily):
    PLUGIN_NAME = "phi"
    END_TOKENS = ("<|end|>",)
    OPTIONAL_END_TOKENS = ("<|endoftext|>",)

    def turn(self, role: str, model: ModelInfo) -> str:
        newline = _newline(model)
        return f"<|{role}|>{newline}{{Content}}<|end|>{newline}"

    def generation_prompt(self, model: ModelInfo) -> str:
        return "<|assistant|>" + _newline(model)


def _newline(model: ModelInfo) -> str:
    template = model.chat_template or ""
    return "\n" if "|>\\n'" in template or "|>\n'" in template or "'\\n' + message['content']" in template else ""


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [PhiFamily]


@hookimpl(tryfirst=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    phi = model.model_type in PHI_TYPES or any(name.startswith("Phi") for name in model.architectures)
    return PhiFamily.PLUGIN_NAME if phi and "<|end|>" in (model.chat_template or "") else None
