"""The fallback family, ``derived``: the turn format read from the tokenizer's own chat template.

The template is rendered with sentinel contents; the text around them gives each role's opening and the
closing every turn shares, the generation prompt, and any text before the first turn. The parity check then
confirms the derived format against the template. Claims any model that has a chat template, after every
other family declined.
"""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import (
    ChatTemplateFamily,
    ModelInfo,
    StageError,
    TokenizerFiles,
    hookimpl,
    render_chat_template,
)

MARK = {"system": "\x01SYSTEM\x01", "user": "\x01USER\x01", "assistant": "\x01ASSISTANT\x01", "user2": "\x01USER2\x01"}


class DerivedFamily(ChatTemplateFamily):
    PLUGIN_NAME = "derived"

    def run(self, artifact: Any, output_dir: Any) -> Any:
        tokenizer = TokenizerFiles(artifact.path)
        self.format = derive(ModelInfo.from_dir(artifact.path).chat_template or "", tokenizer)
        return super().run(artifact, output_dir)

    def turn(self, role: str, model: ModelInfo) -> str:
        return self.format["openings"][role] + "{Content}" + self.format["closing"]

    def generation_prompt(self, model: ModelInfo) -> str:
        return str(self.format["generation_prompt"])

    def bos_text(self, model: ModelInfo) -> str:
        return str(self.format["bos"])

    def end_tokens(self, tokenizer: TokenizerFiles) -> tuple[str, ...]:
        # The turn's closing text, when it is one token, ends an answer (<|im_end|>, <|eot_id|>, <end_of_turn>).
        closing = self.format["closing"].strip()
        return (closing,) if closing and tokenizer.token_id(closing) is not None else ()


def derive(template: str, tokenizer: TokenizerFiles) -> dict[str, Any]:
    special = tokenizer.special_tokens
    if not template:
        raise StageError(
            "the tokenizer has no chat_template to derive the prompt format from",
            fix="Set [template] family to one that fits the model (see `slmdeploy plugins`).",
        )
    conversation = [
        {"role": role, "content": MARK[key]}
        for key, role in (("system", "system"), ("user", "user"), ("assistant", "assistant"), ("user2", "user"))
    ]
    full = render_chat_template(template, conversation, special, add_generation_prompt=True)
    short = render_chat_template(template, conversation[1:2], special, add_generation_prompt=False)
    short_prompt = render_chat_template(template, conversation[1:2], special, add_generation_prompt=True)
    if not short_prompt.startswith(short):
        raise _cannot("adding the generation prompt changes the text before it")
    generation_prompt = short_prompt[len(short) :]
    try:
        before_system, rest = full.split(MARK["system"])
        between_user, rest = rest.split(MARK["user"])
        between_assistant, rest = rest.split(MARK["assistant"])
        between_user2, tail = rest.split(MARK["user2"])
    except ValueError:
        raise _cannot("some messages do not appear in the rendering, or appear twice") from None
    if not tail.endswith(generation_prompt):
        raise _cannot("the rendering does not end with the generation prompt")
    closing = tail[: len(tail) - len(generation_prompt)]
    if not (between_user.startswith(closing) and between_assistant.startswith(closing)):
        raise _cannot("turns do not end the same way")
    openings = {"user": between_user[len(closing) :], "assistant": between_assistant[len(closing) :]}
    if between_user2[len(closing) :] != openings["user"]:
        raise _cannot("the two user turns open differently")
    user_alone = short.split(MARK["user"])[0]
    if not user_alone.endswith(openings["user"]):
        raise _cannot("a conversation without a system message opens differently")
    bos = user_alone[: len(user_alone) - len(openings["user"])]
    if not before_system.startswith(bos):
        bos = ""
    openings["system"] = before_system[len(bos) :]
    return {"bos": bos, "openings": openings, "closing": closing, "generation_prompt": generation_prompt}


def _cannot(reason: str) -> StageError:
    return StageError(
        f"the prompt format cannot be derived from the tokenizer's chat_template: {reason}",
        fix="Set [template] family to one that fits the model (see `slmdeploy plugins`), or add a "
        "template family plugin for it.",
    )


@hookimpl
def slmdeploy_register_templates() -> list[type[Any]]:
    return [DerivedFamily]


@hookimpl(trylast=True)
def slmdeploy_template_family(model: ModelInfo) -> str | None:
    return DerivedFamily.PLUGIN_NAME if model.chat_template else None
