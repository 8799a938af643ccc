"""The Llama families: Llama 3.x (``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``) and Llama 2
(``<s>[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n... [/INST]``)."""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily, render_chat_template


class Llama3Family(ChatTemplateFamily):
    """Llama 3.1 and later write a preamble into every system turn ("Cutting Knowledge Date: ...", and for
    3.2 today's date); it is read from the chat template, so the deployed templates carry the build's date."""

    PLUGIN_NAME = "llama3"
    TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n{Content}<|eot_id|>"
    GENERATION_PROMPT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    BOS_TEXT = "<|begin_of_text|>"
    END_TOKENS = ("<|eot_id|>",)
    OPTIONAL_END_TOKENS = ("<|end_of_text|>", "<|eom_id|>")

    def turn(self, role: str, model: ModelInfo) -> str:
        text = super().turn(role, model)
        return text.replace("{Content}", _system_preamble(model) + "{Content}") if role == "system" else text


def _system_preamble(model: ModelInfo) -> str:
    header = "<|start_header_id|>system<|end_header_id|>\n\n"
    messages = [{"role": "system", "content": "\x00"}, {"role": "user", "content": "\x01"}]
    rendered = render_chat_template(
        model.chat_template or "", messages, {"bos_token": Llama3Family.BOS_TEXT}, add_generation_prompt=True
    )
    start = rendered.find(header)
    end = rendered.find("\x00")
    return rendered[start + len(header) : end] if 0 <= start < end else ""


class Llama2Family(ChatTemplateFamily):
    """The system prompt is folded into the first user turn; an answer ends with ``</s>``."""

    PLUGIN_NAME = "llama2"
    END_TOKENS = ("</s>",)

    def turn(self, role: str, model: ModelInfo) -> str:
        return {
            "system": "<<SYS>>\n{Content}\n<</SYS>>\n\n",
            "user": "<s>[INST] {Content} [/INST]",
            "assistant": " {Content} </s>",
        }[role]

    def generation_prompt(self, model: ModelInfo) -> str:
        return ""

    def render(self, messages: list[dict[str, str]], model: ModelInfo, default_system: str | None) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else default_system
        turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
        text = ""
        for index, message in enumerate(turns):
            content = message["content"]
            if index == 0 and system is not None:  # as the template does: the system block joins the first turn
                content = self.turn("system", model).replace("{Content}", system) + content
            content = content.strip()
            if message["role"] == "user":
                text += self.turn("user", model).replace("{Content}", content)
            else:
                text += self.turn("assistant", model).replace("{Content}", content)
        return text

    def prompt_template(self, model: ModelInfo) -> Any:
        template = super().prompt_template(model)
        return type(template)(
            system=template.system, user=template.user, assistant=template.assistant, prompt=self.turn("user", model)
        )


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [Llama3Family, Llama2Family]


@hookimpl(tryfirst=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    template = model.chat_template or ""
    if "<|start_header_id|>" in template:
        return Llama3Family.PLUGIN_NAME
    if "[INST]" in template and "<<SYS>>" in template:
        return Llama2Family.PLUGIN_NAME
    return None
