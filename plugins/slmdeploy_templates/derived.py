"""The fallback family, ``derived``: the turn format read from the tokenizer's own chat template.

The template is rendered with sentinel contents; the text around them gives each role's opening and the
closing every turn shares, the generation prompt, and any text before the first turn. The parity check then
confirms the derived format against the template. Claims any model that has a chat template, after every
other family declined.
"""

from __future__ import annotations

from typing import Any

from slmdeploy.plugin import ModelInfo, StageError, hookimpl
from slmdeploy.plugin.templates import ChatTemplateFamily, TokenizerFiles, render_chat_template

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

    def has_system_role(self, model: ModelInfo | None = None) -> bool:
        return bool(self.format["system_role"])

    def end_tokens(self, tokenizer: TokenizerFiles) -> tuple[str, ...]:
        # The turn's closing text, when it is one token, ends an answer (<|im_end|>, <|eot_id|>, <end_of_turn>).
        closing = self.format["closing"].strip()
        return (closing,) if closing and tokenizer.token_id(closing) is not None else ()


def derive(template: str, tokenizer: TokenizerFiles) -> dict[str, Any]:
    """Each role's opening, the closing all turns share, the generation prompt and the text before the first
    turn, from renderings with sentinel contents. Templates that refuse a system message get none."""
    special = tokenizer.special_tokens
    if not template:
        raise StageError(
            "the tokenizer has no chat_template to derive the prompt format from",
            fix="Set [template] family to one that fits the model (see `slmdeploy plugins`).",
        )
    turns = [
        {"role": role, "content": MARK[key]}
        for key, role in (("system", "system"), ("user", "user"), ("assistant", "assistant"), ("user2", "user"))
    ]
    try:
        full = render_chat_template(template, turns, special, add_generation_prompt=True)
    except StageError:  # "System role not supported" (Gemma)
        full, turns = render_chat_template(template, turns[1:], special, add_generation_prompt=True), turns[1:]
    generation_prompt = _generation_prompt(template, turns[-1:], special)
    parts = _split(full, [turn["content"] for turn in turns])
    tail = parts[-1]
    if not tail.endswith(generation_prompt):
        raise _cannot("the rendering does not end with the generation prompt")
    closing = tail[: len(tail) - len(generation_prompt)]
    between = parts[1:-1]  # closing + the next turn's opening
    if not all(part.startswith(closing) for part in between):
        raise _cannot("turns do not end the same way")
    openings = dict(zip([turn["role"] for turn in turns[1:]], [part[len(closing) :] for part in between], strict=True))
    if between[-1][len(closing) :] != openings["user"]:
        raise _cannot("the two user turns open differently")
    user_alone = render_chat_template(template, turns[-1:], special, add_generation_prompt=True)
    before_user = user_alone.split(MARK["user2"])[0]
    bos = before_user[: len(before_user) - len(openings["user"])] if before_user.endswith(openings["user"]) else ""
    system = None
    if turns[0]["role"] == "system":
        system = parts[0][len(bos) :] if parts[0].startswith(bos) else parts[0]
        bos = bos if parts[0].startswith(bos) else ""
    else:
        bos = parts[0][: len(parts[0]) - len(openings["user"])]
    openings["system"] = system if system is not None else openings["user"]
    return {
        "bos": bos,
        "openings": openings,
        "closing": closing,
        "generation_prompt": generation_prompt,
        "system_role": system is not None,
    }


def _generation_prompt(template: str, last: list[dict[str, str]], special: dict[str, str]) -> str:
    without = render_chat_template(template, last, special, add_generation_prompt=False)
    with_prompt = render_chat_template(template, last, special, add_generation_prompt=True)
    eos = special.get("eos_token", "")
    if not with_prompt.startswith(without) and eos and without.endswith(eos):  # Phi ends a finished chat with eos
        without = without[: -len(eos)]
    if not with_prompt.startswith(without):
        raise _cannot("adding the generation prompt changes the text before it")
    return with_prompt[len(without) :]


def _split(text: str, sentinels: list[str]) -> list[str]:
    parts = []
    for sentinel in sentinels:
        if text.count(sentinel) != 1:
            raise _cannot("a message does not appear exactly once in the rendering")
        before, text = text.split(sentinel)
        parts.append(before)
    return [*parts, text]


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
