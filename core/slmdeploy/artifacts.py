"""Typed artifacts: what a stage receives from the previous stage and returns to the next.

An artifact is a small frozen attrs record pointing at a directory. The pipeline stores it, with its
directory, in the content-addressed cache, and publishes the ones that have a `PUBLISH_AS` name into
``build/<variant>/``. Plugins may subclass these to carry more fields; fields must be JSON-friendly
(str, int, float, bool, lists and dicts of those) apart from `path`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs

ADAPTERS_DIR = "adapters"
"""The folder of a model folder that holds its runtime LoRA adapters, ``<name>.onnx_adapter`` each."""
ADAPTERS_INDEX = "adapters.json"
"""Beside ``genai_config.json``: ``{"adapters": {name: {"file": "adapters/<name>.onnx_adapter", "rank": r,
"targets": [...], "source": folder}}}``, the runtime adapters a model folder's graph takes (`runtime_adapters`)."""


@attrs.frozen
class Artifact:
    """Base of all artifacts. `path` is the directory (or file) holding the artifact's content."""

    PUBLISH_AS: ClassVar[str | None] = None

    path: Path


@attrs.frozen
class SourceModel(Artifact):
    """The model named in ``[source]``: a Hugging Face folder or a ``.gguf`` file, with an optional
    PEFT LoRA adapter folder to merge before conversion (`adapter`), or PEFT LoRA adapter folders to convert into
    adapter files applied at run time on the one base (`adapters`, ``[convert] adapters = "runtime"``)."""

    format: str = "hf"
    adapter: Path | None = None
    trust_remote_code: bool = False
    adapters: tuple[Path, ...] = ()
    """Runtime adapters: each becomes ``adapters/<folder name>.onnx_adapter`` beside the base's graph."""


@attrs.frozen
class OnnxModel(Artifact):
    """An ONNX Runtime GenAI model folder: ``model.onnx`` (+ external data), ``genai_config.json``,
    tokenizer files and the source's ``config.json``."""

    PUBLISH_AS: ClassVar[str | None] = "model"

    precision: str = "fp32"
    execution_provider: str = "cpu"


@attrs.frozen
class QuantizedModel(OnnxModel):
    """An ONNX Runtime GenAI model folder whose weights were quantized."""


@attrs.frozen
class DeployPackage(OnnxModel):
    """A model folder ready to deploy: the model plus ``inference_model.json``, the chat template and
    stop tokens written by a template family."""

    family: str = ""
    model_name: str = ""


@attrs.frozen
class EvaluationReport(Artifact):
    """Figures measured on a package. `passed` is False when a gate failed; `summary` holds the figures
    gates are judged on. Its files are published at the root of ``build/<variant>/``."""

    PUBLISH_AS: ClassVar[str | None] = "."

    passed: bool = True
    summary: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Registration(Artifact):
    """Where a package was registered. `path` is the folder the registry runs the model from."""

    registry: str = ""
    model_id: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)


def adapter_file(model_folder: Path, name: str) -> Path:
    """The file of the runtime LoRA adapter `name` in a model folder: ``adapters/<name>.onnx_adapter``."""
    return model_folder / ADAPTERS_DIR / f"{name}.onnx_adapter"


def adapter_variant(adapter: str, base: str) -> str:
    """The name of a runtime adapter's variant on the base variant `base`: ``<adapter>-<base>`` (``pirate-int4``)."""
    return f"{adapter}-{base}"


def runtime_adapters(folder: Path) -> dict[str, dict[str, Any]]:
    """The runtime adapters of the model folder `folder`, by name (`ADAPTERS_INDEX`); empty when it has none."""
    index = folder / ADAPTERS_INDEX
    if not index.is_file():
        return {}
    found: dict[str, dict[str, Any]] = json.loads(index.read_text(encoding="utf-8"))["adapters"]
    return found


def model_config(path: Path) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a model folder, or an empty dict."""
    config = path / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}


@attrs.frozen
class ModelInfo:
    """What template dispatch looks at: the model's config and its tokenizer's chat template."""

    path: Path
    model_type: str
    architectures: tuple[str, ...]
    chat_template: str | None
    config: dict[str, Any]

    @classmethod
    def from_dir(cls, path: Path) -> ModelInfo:
        config = model_config(path)
        return cls(
            path=path,
            model_type=str(config.get("model_type", "")),
            architectures=tuple(config.get("architectures") or ()),
            chat_template=chat_template(path),
            config=config,
        )


def chat_template(path: Path) -> str | None:
    """The tokenizer's jinja chat template, from ``chat_template.jinja`` or ``tokenizer_config.json``."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tokenizer_config = path / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return None
    template = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("chat_template")
    return template if isinstance(template, str) else None
