"""``[source]`` checked where it enters: the model file or folder, the GGUF header, the LoRA adapter folders; into
the models a build's variants start from."""

from __future__ import annotations

from pathlib import Path

import attrs

from slmdeploy.artifacts import SourceModel
from slmdeploy.config.project import Project, adapter_name, existing_path, resolve_source_path
from slmdeploy.gguf import check_gguf

ADAPTER_FIX = "Point [source] adapter at a PEFT adapter folder (adapter_config.json and weights)."


@attrs.frozen
class NamedSource:
    """A model variants start from, with the prefix of their names (an adapter's folder name, or ``""``)."""

    prefix: str
    model: SourceModel


def resolve_sources(project: Project) -> tuple[NamedSource, ...]:
    """The models variants start from: one (``prefix ""``) for one adapter or none, else one per adapter
    (``support``, ``sales``), each named after its folder."""
    path = resolve_source_path(project)
    fmt = "gguf" if path.is_file() and path.suffix.lower() == ".gguf" else "hf"
    if fmt == "gguf":
        check_gguf(path, where=project.locate("source.package" if project.source.package else "source.path"))
    base = SourceModel(path, format=fmt, trust_remote_code=project.source.trust_remote_code)
    adapters = project.source.adapter
    if not adapters:
        return (NamedSource("", base),)
    if isinstance(adapters, str):
        return (NamedSource("", attrs.evolve(base, adapter=_adapter_folder(project, adapters))),)
    return tuple(
        NamedSource(adapter_name(folder), attrs.evolve(base, adapter=_adapter_folder(project, folder)))
        for folder in adapters
    )


def _adapter_folder(project: Project, folder: str) -> Path:
    what = "the LoRA adapter folder {path} does not exist"
    return existing_path(project, folder, "source.adapter", what, ADAPTER_FIX, folder=True)
