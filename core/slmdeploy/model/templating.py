"""Chat template families: the prompt format and stop tokens a deployed model is run with.

A family declares how one turn is written (`turn`), what opens the answer (`generation_prompt`) and which
tokens end it (`END_TOKENS`). `ChatTemplateFamily.run` then writes the deployable package: Foundry Local's
``inference_model.json``, the ``[generation]`` defaults and every stop token in ``genai_config.json``, and the
tokenizer's own chat template. Before that, the parity check (`slmdeploy.model.template_parity`) renders its
conversations with the family's format and with the tokenizer's jinja ``chat_template``; any difference fails
the stage, showing both.
``docs/plugins/templates.md`` documents writing a family, with a complete example.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from slmdeploy.artifacts import DeployPackage, ModelInfo, OnnxModel, chat_template
from slmdeploy.errors import ConfigError, StageError
from slmdeploy.files import link_tree
from slmdeploy.model.runtime import session_options
from slmdeploy.model.template_parity import Messages, check_parity
from slmdeploy.model.tokenizer import TokenizerFiles
from slmdeploy.stages import TemplateFamily, option


@attrs.frozen
class PromptTemplate:
    """Foundry Local's ``PromptTemplate``: each string holds the ``{Content}`` placeholder."""

    system: str
    user: str
    assistant: str
    prompt: str


@attrs.define
class FamilyOptions:
    extra_stop_tokens: list[str] = option(
        [], help="more tokens that end an answer (each must be in the tokenizer's vocabulary)"
    )


class ChatTemplateFamily(TemplateFamily):
    """A family whose conversations are turns written one after another.

    Most families only set the class attributes. For formats that are not a plain sequence of turns, override
    `turn`, `generation_prompt`, `bos_text` or `has_system_role` (each receives the model, `ModelInfo`, whose
    ``chat_template`` is the tokenizer's jinja template), or `render` for the whole conversation (Llama 2 and
    Gemma fold the system message into the first user turn). The parity check compares `render` with the chat
    template, so an override that is wrong fails the build instead of deploying a wrong prompt.
    """

    Options = FamilyOptions
    TURN: ClassVar[str] = ""
    """One turn, with ``{role}`` and ``{Content}``; include the separator that follows a turn."""
    ROLES: ClassVar[Mapping[str, str]] = {}
    """The name `TURN` writes for a message role, when it differs (Gemma writes ``model`` for ``assistant``)."""
    GENERATION_PROMPT: ClassVar[str] = ""
    """What opens the assistant's answer."""
    BOS_TEXT: ClassVar[str] = ""
    """Text the chat template writes before the first turn (for example ``<|begin_of_text|>``)."""
    END_TOKENS: ClassVar[tuple[str, ...]] = ()
    """Tokens that end an answer and must be in the vocabulary; the first one ends a turn."""
    OPTIONAL_END_TOKENS: ClassVar[tuple[str, ...]] = ()
    """Tokens that also end an answer when the vocabulary has them (end of text)."""
    SYSTEM_ROLE: ClassVar[bool] = True
    """False for formats without system messages (Gemma 2): the parity check then skips conversations with one.
    `has_system_role` decides per model; by default it returns this."""
    TOOL_CALL: ClassVar[tuple[str, str]] = ("<tool_call>", "</tool_call>")
    """How the model writes a tool call: the text before and after the call's JSON (``{"name": ..., "arguments":
    {...}}``); Hermes' and Qwen's tags by default. Written into ``inference_model.json`` as ``ToolCall``, where
    ``slmdeploy serve`` reads it to prompt, constrain and parse calls."""

    def turn(self, role: str, model: ModelInfo) -> str:
        """One turn of `role` (``system``, ``user``, ``assistant``) with the ``{Content}`` placeholder."""
        return self.TURN.replace("{role}", self.ROLES.get(role, role))

    def generation_prompt(self, model: ModelInfo) -> str:
        return self.GENERATION_PROMPT

    def bos_text(self, model: ModelInfo) -> str:
        return self.BOS_TEXT

    def end_tokens(self, tokenizer: TokenizerFiles) -> tuple[str, ...]:
        return self.END_TOKENS

    def has_system_role(self, model: ModelInfo | None = None) -> bool:
        """Whether `model`'s format has system messages. Families written before it received the model may
        override it as ``has_system_role(self)``; both are called correctly."""
        return self.SYSTEM_ROLE

    def render(self, messages: Messages, model: ModelInfo, default_system: str | None) -> str:
        """The family's own rendering of `messages`, with the generation prompt."""
        if default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": default_system}, *messages]
        turns = "".join(self.turn(m["role"], model).replace("{Content}", m["content"]) for m in messages)
        return self.bos_text(model) + turns + self.generation_prompt(model)

    def prompt_template(self, model: ModelInfo) -> PromptTemplate:
        """Foundry's templates: each turn without its trailing newline; the prompt is a user turn
        followed by the opening of the answer."""
        turns = {role: self.turn(role, model) for role in ("system", "user", "assistant")}
        return PromptTemplate(
            system=turns["system"].rstrip("\n"),
            user=turns["user"].rstrip("\n"),
            assistant=turns["assistant"].rstrip("\n"),
            prompt=turns["user"] + self.generation_prompt(model).rstrip("\n"),
        )

    def run(self, artifact: OnnxModel, output_dir: Path) -> DeployPackage:
        tokenizer = TokenizerFiles(artifact.path)
        model = ModelInfo.from_dir(artifact.path)
        template = chat_template(artifact.path)
        if not template:
            raise StageError(
                "the tokenizer has no chat_template, so the prompt format cannot be checked",
                fix="Add the chat template the model was fine-tuned with to tokenizer_config.json.",
            )
        check_parity(self, model, template, tokenizer)
        stops = self.stop_tokens(tokenizer, artifact.path)
        link_tree(artifact.path, output_dir)  # rewritten files are unlinked first
        self.write_package(output_dir, model, stops, template, tokenizer)
        self.context.log(f"{self.PLUGIN_NAME} template; stop tokens {', '.join(f'{t} ({i})' for t, i in stops)}")
        name = package_name(self.context.project_name, self.context.variant)
        return DeployPackage(
            output_dir,
            precision=artifact.precision,
            execution_provider=artifact.execution_provider,
            family=self.PLUGIN_NAME,
            model_name=name,
        )

    def stop_tokens(self, tokenizer: TokenizerFiles, model_dir: Path) -> list[tuple[str, int]]:
        """Every token that ends an answer: the family's, the tokenizer's eos, generation_config.json's."""
        extra = [name for name in self.options.extra_stop_tokens if tokenizer.token_id(name) is None]
        if extra:
            raise ConfigError(
                f"[template] extra_stop_tokens names {extra[0]!r}, which is not in the tokenizer's vocabulary",
                where="[template] extra_stop_tokens",
                fix="List tokens exactly as the tokenizer writes them (see tokenizer.json's added_tokens).",
            )
        names = list(self.end_tokens(tokenizer))
        missing = [name for name in names if tokenizer.token_id(name) is None]
        if missing:
            raise StageError(
                f"the stop token {missing[0]!r} of the {self.PLUGIN_NAME} family is not in the tokenizer's vocabulary",
                fix="This family does not fit the model: set [template] family to another one (see `slmdeploy "
                'plugins`), or "derived" to take the format from the tokenizer\'s own chat template.',
            )
        names += self.options.extra_stop_tokens
        names += [name for name in self.OPTIONAL_END_TOKENS if tokenizer.token_id(name) is not None]
        ids = [tokenizer.token_id(name) for name in names]
        ids += [tokenizer.eos_id, *generation_eos_ids(model_dir)]
        found = {token_id: tokenizer.token(token_id) for token_id in ids if token_id is not None}
        return [(token or f"<id {token_id}>", token_id) for token_id, token in found.items()]

    def write_package(
        self, folder: Path, model: ModelInfo, stops: list[tuple[str, int]], template: str, tokenizer: TokenizerFiles
    ) -> None:
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        generation = fit_to_context(self.context.tables["generation"], genai)
        project = self.context.tables["project"]
        info = {
            "Name": package_name(self.context.project_name, self.context.variant),
            "Description": project.get("description", ""),
            "Version": str(self.context.project_version),
            "PromptTemplate": attrs.asdict(self.prompt_template(model)),
            "ModelConfig": {
                key: generation[key] for key in ("max_length", "temperature", "top_p", "repetition_penalty")
            },
            "ToolCall": {"Start": self.TOOL_CALL[0], "End": self.TOOL_CALL[1]},
        }
        _write_json(folder / "inference_model.json", info)
        ids = [token_id for _, token_id in stops]
        genai["model"]["eos_token_id"] = ids[0] if len(ids) == 1 else ids
        genai["search"] = {**genai.get("search", {}), **generation_search(generation)}
        chunk = int(self.context.tables["runtime"]["prefill_chunk"])
        if chunk > 0:
            genai["search"]["chunk_size"] = chunk
        else:
            genai["search"].pop("chunk_size", None)
        decoder = genai["model"].setdefault("decoder", {})
        decoder["session_options"] = {
            **decoder.get("session_options", {}),
            **session_options(self.context.tables["runtime"]["threads"]),
        }
        _write_json(folder / "genai_config.json", genai)
        _write_json(folder / "tokenizer_config.json", {**tokenizer.config, "chat_template": template})
        _compact_json(folder / "tokenizer.json")
        if not (folder / "chat_template.jinja").exists():
            (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
        if generation["max_length"] < self.context.tables["generation"]["max_length"]:
            self.context.log(
                f"max_length {self.context.tables['generation']['max_length']} is longer than the "
                f"model's context; {generation['max_length']} is written"
            )


def package_name(project: str, variant: str) -> str:
    return project if variant == "default" else f"{project}-{variant}"


def fit_to_context(generation: dict[str, Any], genai: dict[str, Any]) -> dict[str, Any]:
    """``[generation]`` with ``max_length`` no longer than the model's context (Foundry Local refuses requests
    whose answer budget exceeds it)."""
    context = int(genai["model"].get("context_length") or generation["max_length"])
    return {**generation, "max_length": min(int(generation["max_length"]), context)}


def generation_search(generation: dict[str, Any]) -> dict[str, Any]:
    """``[generation]`` as genai_config.json's search options (sampling whenever the temperature is above 0)."""
    return {
        "max_length": generation["max_length"],
        "temperature": generation["temperature"],
        "top_p": generation["top_p"],
        "repetition_penalty": generation["repetition_penalty"],
        "do_sample": generation["temperature"] > 0,
    }


def generation_eos_ids(model_dir: Path) -> list[int]:
    file = model_dir / "generation_config.json"
    if not file.is_file():
        return []
    value = json.loads(file.read_text(encoding="utf-8")).get("eos_token_id")
    return [value] if isinstance(value, int) else [int(item) for item in value or []]


def _compact_json(file: Path) -> None:
    """`file` rewritten without indentation: the same JSON in fewer bytes (a tokenizer.json saved by transformers
    is indented, twice the size: 3.5 MB against 1.6 MB for SmolLM2's)."""
    text = file.read_text(encoding="utf-8")
    compact = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    if len(compact) < len(text):
        file.unlink()
        file.write_text(compact, encoding="utf-8")


def _write_json(file: Path, data: dict[str, Any]) -> None:
    file.unlink(missing_ok=True)
    file.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
