"""The Gemma family (Gemma 2 and 3): ``<start_of_turn>user\\n...<end_of_turn>\\n``, answers in the ``model`` role.

Gemma 2's chat template refuses system messages; Gemma 3's folds the system message into the first user turn,
followed by a blank line. Which of the two is read from the model's chat template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from slmdeploy.plugin import ModelInfo, StageError, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily, PromptTemplate, render_chat_template

GEMMA_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text")


class GemmaFamily(ChatTemplateFamily):
    PLUGIN_NAME = "gemma"
    TURN = "<start_of_turn>{role}\n{Content}<end_of_turn>\n"
    ROLES: ClassVar[Mapping[str, str]] = {"assistant": "model"}
    GENERATION_PROMPT = "<start_of_turn>model\n"
    BOS_TEXT = "<bos>"
    END_TOKENS = ("<end_of_turn>",)
    OPTIONAL_END_TOKENS = ("<eos>",)
    SYSTEM_PREFIX = "{Content}\n\n"
    """Gemma 3: what the system message becomes at the start of the first user turn."""

    def has_system_role(self, model: ModelInfo | None = None) -> bool:
        """Gemma 3's template takes a system message; Gemma 2's raises "System role not supported"."""
        if model is None or not model.chat_template:
            return True
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        try:
            render_chat_template(model.chat_template, messages, {"bos_token": self.BOS_TEXT}, True)
        except StageError:
            return False
        return True

    def turn(self, role: str, model: ModelInfo) -> str:
        return self.SYSTEM_PREFIX if role == "system" else super().turn(role, model)

    def render(self, messages: list[dict[str, str]], model: ModelInfo, default_system: str | None) -> str:
        """As the templates do: contents trimmed, the system message (untrimmed) before the first turn's."""
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else default_system
        turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
        text = self.bos_text(model)
        for index, message in enumerate(turns):
            prefix = self.SYSTEM_PREFIX.replace("{Content}", system) if index == 0 and system is not None else ""
            text += super().turn(message["role"], model).replace("{Content}", prefix + message["content"].strip())
        return text + self.generation_prompt(model)

    def prompt_template(self, model: ModelInfo) -> PromptTemplate:
        user = super().turn("user", model).rstrip("\n")
        return PromptTemplate(
            system=self.SYSTEM_PREFIX,
            user=user,
            assistant=super().turn("assistant", model).rstrip("\n"),
            prompt=user + "\n" + self.generation_prompt(model).rstrip("\n"),
        )


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [GemmaFamily]


@hookimpl(tryfirst=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    gemma = model.model_type in GEMMA_TYPES or any(name.startswith("Gemma") for name in model.architectures)
    return GemmaFamily.PLUGIN_NAME if gemma and "<start_of_turn>" in (model.chat_template or "") else None
