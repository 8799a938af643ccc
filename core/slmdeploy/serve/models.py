"""The packages a server answers for: a project's deployable variants (what ``slmdeploy ls`` shows, without those
whose gates failed), or package folders given by path; each under the name it is registered with."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import adapter_variant, runtime_adapters
from slmdeploy.deploy.listing import deployed_models
from slmdeploy.deployed import DeployedModel
from slmdeploy.errors import ConfigError, InputError
from slmdeploy.serve.tools import HERMES, CallFormat

PACKAGE_FILE = "genai_config.json"


@attrs.frozen
class ModelSpec:
    """What to serve: the name clients use, other names that reach it, and the package folder."""

    name: str
    folder: Path
    aliases: tuple[str, ...] = ()
    adapters: tuple[tuple[str, Path], ...] = ()
    """The package's runtime LoRA adapters (name, ``.onnx_adapter`` file): each served as ``<name>:<adapter>`` on
    this one loaded base."""
    base_served: bool = True
    """False when the base variant failed its own gates and some of its adapters' variants passed theirs: the base
    is loaded for them, and only their ``<name>:<adapter>`` names reach it."""

    def adapter_names(self) -> dict[str, str]:
        """Every model name that reaches an adapter (``<name>:<adapter>``, and with each alias), to the adapter."""
        return {f"{name}:{adapter}": adapter for name in (self.name, *self.aliases) for adapter, _ in self.adapters}

    def served_names(self) -> tuple[str, ...]:
        """Every model name that reaches this package: its name and aliases (unless `base_served` is False), and
        its adapters'."""
        return (*((self.name, *self.aliases) if self.base_served else ()), *self.adapter_names())

    def title(self) -> str:
        """How the server names it when it starts: its name, or its adapters' when only they are served."""
        return self.name if self.base_served else ", ".join(self.listed_names())

    def listed_names(self) -> tuple[str, ...]:
        """The names ``/v1/models`` lists: its name (if the base is served) and ``<name>:<adapter>`` for each."""
        return (
            *((self.name,) if self.base_served else ()),
            *(f"{self.name}:{adapter}" for adapter, _ in self.adapters),
        )


def project_specs(build_dir: Path, wanted: Sequence[str]) -> list[ModelSpec]:
    """The deployable variants in `build_dir` (all, or those `wanted` by name, variant or folder path)."""
    # a runtime adapter's variant is served by its base's spec (one loaded base for all of them), unless it failed
    # its own gates; a base that failed its gates is still loaded for its adapters that passed theirs, under their
    # names only
    models = deployed_models(build_dir)
    failed = {model.variant for model in models if model.adapter and model.gates == "failed"}
    passed_adapters = {model.base for model in models if model.adapter and model.gates != "failed"}
    deployable = [
        model
        for model in models
        if model.adapter is None and (model.gates != "failed" or model.variant in passed_adapters)
    ]
    if not wanted:
        if not deployable:
            raise ConfigError(
                "no deployed model passed its gates",
                where=str(build_dir),
                fix="Run `slmdeploy build`; see `slmdeploy ls`.",
            )
        return [_spec(model, failed) for model in deployable]
    return [_pick(deployable, name, build_dir, failed) for name in wanted]


def folder_specs(paths: Sequence[str]) -> list[ModelSpec]:
    """Package folders given by path, named by their ``inference_model.json`` (else the folder's name)."""
    if not paths:
        raise ConfigError(
            "there is no project here and no --model was given",
            fix="Run in a project folder (or pass -C DIR), or give a package folder with --model PATH.",
        )
    return [_folder_spec(Path(path)) for path in paths]


def _spec(model: DeployedModel, failed: set[str]) -> ModelSpec:
    """`model`'s spec, with its runtime adapters but those whose variants (in `failed`) failed their gates."""
    registered = (model.registration or {}).get("model_id")
    names = [str(registered)] if registered else []
    names += [name for name in (model.name, model.variant) if name not in names]
    adapters = tuple(item for item in _adapters(model.folder) if adapter_variant(item[0], model.variant) not in failed)
    return ModelSpec(names[0], model.folder, tuple(names[1:]), adapters, base_served=model.gates != "failed")


def _adapters(folder: Path) -> tuple[tuple[str, Path], ...]:
    return tuple((name, folder / item["file"]) for name, item in runtime_adapters(folder).items())


def _pick(deployable: list[DeployedModel], wanted: str, build_dir: Path, failed: set[str]) -> ModelSpec:
    if (Path(wanted) / PACKAGE_FILE).is_file():
        return _folder_spec(Path(wanted))
    for model in deployable:
        spec = _spec(model, failed)
        variants = {adapter_variant(adapter, model.variant) for adapter, _ in spec.adapters}
        if wanted in (*spec.served_names(), *variants):
            return spec
    listing = ", ".join(name for model in deployable for name in _spec(model, failed).listed_names()) or "none"
    raise ConfigError(
        f"no deployable model is named {wanted!r}", where=str(build_dir), fix=f"Deployable models: {listing}."
    )


def _folder_spec(folder: Path) -> ModelSpec:
    if not (folder / PACKAGE_FILE).is_file():
        raise InputError(
            f"{folder} is not an ONNX Runtime GenAI package (no {PACKAGE_FILE})",
            fix="Give a built model folder, such as build/<variant>/model.",
        )
    info = folder / "inference_model.json"
    name = json.loads(info.read_text(encoding="utf-8")).get("Name") if info.is_file() else None
    return ModelSpec(str(name or folder.resolve().name), folder, adapters=_adapters(folder))


@attrs.define
class LoadedModel:
    """A package loaded for serving: its decoder (a pool of KV rows), tokenizer, limits and generation defaults."""

    spec: ModelSpec
    decoder: Any
    """The `slmdeploy.serve.decoder.Decoder`, holding ``max_batch`` rows of the package's context each."""
    tokenizer: Any
    context_tokens: int
    """Prompt plus answer, at most: the package's ``search.max_length`` (else the model's context length)."""
    eos: frozenset[int]
    defaults: dict[str, Any]
    """The package's search options (temperature, top_p, top_k, repetition_penalty, do_sample)."""
    prefill_chunk: int = 0
    """Prompt tokens read per step (the package's ``search.chunk_size``, from ``[runtime] prefill_chunk``); 0: all."""
    guidance_tokenizer: Any = None
    """llguidance's tokenizer, made when a request first asks for a response format."""

    reads_tools: bool = False
    """Whether the package's chat template renders a ``tools`` variable (`slmdeploy.serve.tools`)."""
    tool_call: CallFormat = HERMES
    """How the model writes a tool call (``inference_model.json``'s ``ToolCall``, from its template family)."""

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids: `messages` through the package's chat template, as ``slmdeploy run`` renders
        them, with the assistant's turn opened; `tools` (OpenAI's ``tools`` items) shown to the model as
        `slmdeploy.serve.tools` says."""
        from slmdeploy.serve import tools as calling

        if tools is not None and self.reads_tools:
            text = self.tokenizer.apply_chat_template(
                json.dumps(calling.template_messages(messages)), tools=json.dumps(tools), add_generation_prompt=True
            )
        else:
            functions = [tool["function"] for tool in tools or ()]
            text = self.tokenizer.apply_chat_template(
                json.dumps(calling.fallback_messages(messages, functions, self.tool_call)), add_generation_prompt=True
            )
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]


def load(spec: ModelSpec, threads: int, max_batch: int) -> LoadedModel:
    """Load `spec`'s package with `threads` intra-op threads and `max_batch` KV rows of its whole context each."""
    import onnxruntime_genai as og

    from slmdeploy.serve.decoder import Decoder
    from slmdeploy.serve.tools import call_format, template_reads_tools

    config = json.loads((spec.folder / PACKAGE_FILE).read_text(encoding="utf-8"))
    search = config.get("search", {})
    context = int(search.get("max_length") or config["model"]["context_length"])
    decoder = Decoder(spec.folder, max_batch, threads, context, dict(spec.adapters))
    # onnxruntime-genai's tokenizer and chat template (what `slmdeploy run` renders with), made from the package's
    # folder: no second copy of the model is loaded for it (that made the server's peak 190 MB higher)
    tokenizer = og.Tokenizer(str(spec.folder))
    eos = config["model"].get("eos_token_id", [])
    return LoadedModel(
        spec=spec,
        decoder=decoder,
        tokenizer=tokenizer,
        context_tokens=context,
        eos=frozenset(eos if isinstance(eos, list) else [eos]),
        reads_tools=template_reads_tools(_chat_template(spec.folder)),
        tool_call=call_format(spec.folder),
        defaults={key: search[key] for key in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
                  if key in search},
        prefill_chunk=int(search.get("chunk_size") or 0),
    )  # fmt: skip


def _chat_template(folder: Path) -> str:
    """The chat template the runtime renders with: ``tokenizer_config.json``'s (text, or the default of a list)."""
    config_file = folder / "tokenizer_config.json"
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template") if config_file.is_file() else ""
    if isinstance(template, list):
        template = next((item.get("template", "") for item in template if item.get("name") == "default"), "")
    return str(template or "")
