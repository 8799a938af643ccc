"""A slmdeploy template family for Mistral Instruct (v0.2 and later v0.x): ``<s> [INST] ... [/INST] ...</s>``.

The optional system message is written inside the first ``[INST]``, before the user's text, so the format is
not a plain sequence of turns: this family renders conversations itself. Everything else (the parity check
against the tokenizer's chat template, ``inference_model.json``, stop tokens in ``genai_config.json``) comes
from `ChatTemplateFamily` (`slmdeploy.plugin.templates`), slmdeploy's helper for template families.
"""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily, PromptTemplate

__version__ = "0.1.0"


class MistralFamily(ChatTemplateFamily):
    PLUGIN_NAME = "mistral"
    BOS_TEXT = "<s>"
    END_TOKENS = ("</s>",)

    def turn(self, role: str, model: ModelInfo) -> str:
        return {"system": " [INST] {Content}\n\n", "user": " [INST] {Content} [/INST]", "assistant": " {Content}</s>"}[
            role
        ]

    def render(self, messages: list[dict[str, str]], model: ModelInfo, default_system: str | None) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        turns = messages[1:] if system is not None else messages
        text = self.bos_text(model)
        for index, message in enumerate(turns):
            if message["role"] == "user" and index == 0 and system is not None:
                text += self.turn("system", model).replace("{Content}", system) + message["content"] + " [/INST]"
            else:
                text += self.turn(message["role"], model).replace("{Content}", message["content"])
        return text

    def prompt_template(self, model: ModelInfo) -> PromptTemplate:
        return PromptTemplate(
            system="[INST] {Content}\n\n",
            user="[INST] {Content} [/INST]",
            assistant=" {Content}</s>",
            prompt="[INST] {Content} [/INST]",
        )


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [MistralFamily]


@hookimpl(tryfirst=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    template = model.chat_template or ""
    mistral = model.model_type in ("mistral", "mixtral") or any(a.startswith("Mistral") for a in model.architectures)
    return MistralFamily.PLUGIN_NAME if mistral and "[INST]" in template and "<<SYS>>" not in template else None
