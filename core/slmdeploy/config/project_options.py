"""The project file checked once, where it enters: the typed options a build is planned from.

`project_options` turns a loaded `Project` into `ProjectOptions`: the source models (paths resolved and checked),
each stage table's selected implementation and keys, the quantization search, the gates and the fallback chain,
every error at its line of ``slmdeploy.toml``. What needs the installed plugins (a stage table's keys against its
implementation's `Options`, a gate's figure against the evaluators' `METRICS`, a fallback entry against the
variants) is checked when the plan is made, from these options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import SourceModel
from slmdeploy.candidates import QuantizeSearch
from slmdeploy.config.gates import Gate, parse_fallback, parse_gates
from slmdeploy.config.options import check_keys
from slmdeploy.config.project import Project, adapter_name, existing_path, resolve_source_path
from slmdeploy.config.search import parse_search
from slmdeploy.errors import ConfigError
from slmdeploy.gguf import check_gguf
from slmdeploy.stages import STAGE_ORDER

AUTO = "auto"
SELECTORS = {
    "convert": "plugin",
    "quantize": "plugin",
    "template": "family",
    "evaluate": "plugins",
    "register": "plugin",
}
"""The key of each stage table that names its implementation."""
EVALUATE_KEYS = ("plugins", "gates", "fallback")
ADAPTER_FIX = "Point [source] adapter at a PEFT adapter folder (adapter_config.json and weights)."
ADAPTER_MODES = ("merge", "runtime")
ADAPTERS_KEY = "adapters"
"""``[convert] adapters``: a core key of the convert table (it shapes the sources), never passed to the plugin."""
ADAPTERS_HELP = (
    'adapters = "merge" (the default) merges each LoRA adapter of [source] adapter into its own copy of the base; '
    '"runtime" converts the base once and each adapter into a file applied per request on that one base'
)


@attrs.frozen
class NamedSource:
    """A model variants start from, with the prefix of their names (an adapter's folder name, or ``""``)."""

    prefix: str
    model: SourceModel


@attrs.frozen
class StageTable:
    """A stage table: the implementation it selects, and its other keys (checked against that implementation's
    `Options` when the plan is made)."""

    stage: str
    key: str
    """Where the table is: ``quantize``, or ``evaluate.benchmark`` for an evaluator's own table."""
    name: str | None
    """The selected `PLUGIN_NAME`; ``"auto"`` for a template family chosen per model; None when the table does not
    say (an error once the installed implementations can be listed)."""
    options: Mapping[str, Any]


@attrs.frozen
class ProjectOptions:
    """Everything a build is planned from, checked: what `slmdeploy_check_project` receives."""

    project: Project
    """The project file as loaded (its core tables, and `locate` for errors at a line)."""
    sources: tuple[NamedSource, ...]
    """The models variants start from: one, or one per LoRA adapter of ``[source] adapter``."""
    stages: tuple[StageTable, ...]
    """The stage tables present, in build order; ``[evaluate]`` as one table per selected evaluator."""
    search: QuantizeSearch | None
    """``[quantize] search``, when set."""
    gates: tuple[Gate, ...]
    """``[evaluate.gates]``."""
    fallback: tuple[str, ...]
    """``[evaluate] fallback``: variant names in order of preference, or empty."""
    adapters: str = "merge"
    """``[convert] adapters``: ``"merge"`` (each adapter merged into a copy of the base: a source per adapter) or
    ``"runtime"`` (one source, the base, carrying every adapter folder in `SourceModel.adapters`)."""

    def table(self, key: str) -> StageTable | None:
        """The stage table at `key` (``register``, ``evaluate.quality``), or None when the project has none."""
        return next((table for table in self.stages if table.key == key), None)

    @property
    def evaluators(self) -> tuple[str, ...]:
        """The selected evaluators, by `PLUGIN_NAME`."""
        return tuple(str(table.name) for table in self.stages if table.stage == "evaluate")


def project_options(project: Project) -> ProjectOptions:
    """Check the project file's build options once; raise `ConfigError` (or `InputError`) at the offending line."""
    quantize = project.stages.get("quantize", {})
    search = parse_search(project, quantize["search"]) if "search" in quantize else None
    evaluate = project.stages.get("evaluate", {})
    gates = parse_gates(project, evaluate.get("gates", {}))
    fallback = parse_fallback(project, evaluate["fallback"]) if "fallback" in evaluate else ()
    if fallback and search is not None:
        raise ConfigError(
            "[evaluate] fallback and [quantize] search both choose the variant to deploy",
            where=project.locate("evaluate.fallback"),
            fix="Leave out fallback: the search deploys the best candidate that meets its targets "
            "(and the gates of [evaluate.gates]).",
        )
    stages = tuple(table for stage in STAGE_ORDER if stage in project.stages for table in _tables(project, stage))
    mode = adapter_mode(project)
    return ProjectOptions(project, resolve_sources(project, mode), stages, search, gates, fallback, mode)


def adapter_mode(project: Project) -> str:
    """``[convert] adapters``, checked: one of `ADAPTER_MODES`; ``"runtime"`` needs adapters in ``[source]``."""
    value = project.stages.get("convert", {}).get(ADAPTERS_KEY, "merge")
    if value not in ADAPTER_MODES:
        raise ConfigError(
            f'[convert] adapters must be "merge" or "runtime", not {value!r}',
            where=project.locate(f"convert.{ADAPTERS_KEY}"),
            fix=f"{ADAPTERS_HELP}.",
        )
    if value == "runtime" and not project.source.adapter:
        raise ConfigError(
            '[convert] adapters = "runtime" applies LoRA adapters at run time, but [source] names no adapter',
            where=project.locate(f"convert.{ADAPTERS_KEY}"),
            fix='List the PEFT adapter folders in [source] adapter = ["adapters/support", ...], or leave out '
            "[convert] adapters.",
        )
    return str(value)


def _tables(project: Project, stage: str) -> list[StageTable]:
    table = project.stages[stage]
    selector = SELECTORS[stage]
    if stage == "evaluate":
        return [
            StageTable(stage, f"evaluate.{name}", name, _evaluator_table(project, table, name))
            for name in _evaluator_names(project, table)
        ]
    taken = {"quantize": (selector, "search"), "convert": (selector, ADAPTERS_KEY)}.get(stage, (selector,))
    options = {key: value for key, value in table.items() if key not in taken}
    return [StageTable(stage, stage, table.get(selector, AUTO if stage == "template" else None), options)]


def _evaluator_names(project: Project, table: Mapping[str, Any]) -> list[str]:
    names = table.get("plugins", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(
            f"[evaluate] plugins must be a list of strings, not {names!r}",
            where=project.locate("evaluate.plugins"),
            fix='For example plugins = ["benchmark", "quality"] (`slmdeploy plugins` lists the evaluators).',
        )
    check_keys(table, dict.fromkeys([*EVALUATE_KEYS, *names]), "evaluate", project.locate)
    return names


def _evaluator_table(project: Project, table: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    options = table.get(name, {})
    if not isinstance(options, Mapping):
        key = f"evaluate.{name}"
        raise ConfigError(f"[{key}] must be a table", where=project.locate(key), fix=f"Write it as [{key}].")
    return options


def resolve_sources(project: Project, mode: str = "merge") -> tuple[NamedSource, ...]:
    """The models variants start from: one (``prefix ""``) for one adapter or none, else one per adapter
    (``support``, ``sales``), each named after its folder; with runtime adapters (`mode` ``"runtime"``), one: the
    base, carrying every adapter folder."""
    path = resolve_source_path(project)
    fmt = "gguf" if path.is_file() and path.suffix.lower() == ".gguf" else "hf"
    if fmt == "gguf":
        check_gguf(path, where=project.locate("source.package" if project.source.package else "source.path"))
    base = SourceModel(path, format=fmt, trust_remote_code=project.source.trust_remote_code)
    adapters = project.source.adapter
    if not adapters:
        return (NamedSource("", base),)
    if mode == "runtime":
        folders = [adapters] if isinstance(adapters, str) else adapters
        return (NamedSource("", attrs.evolve(base, adapters=tuple(_adapter_folder(project, f) for f in folders))),)
    if isinstance(adapters, str):
        return (NamedSource("", attrs.evolve(base, adapter=_adapter_folder(project, adapters))),)
    return tuple(
        NamedSource(adapter_name(folder), attrs.evolve(base, adapter=_adapter_folder(project, folder)))
        for folder in adapters
    )


def _adapter_folder(project: Project, folder: str) -> Path:
    what = "the LoRA adapter folder {path} does not exist"
    return existing_path(project, folder, "source.adapter", what, ADAPTER_FIX, folder=True)
