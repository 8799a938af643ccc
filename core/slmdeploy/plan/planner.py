"""Planning: from a project file and the installed plugins to the steps each variant runs.

Everything a user can get wrong in the project file is found here, before any stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import SourceModel
from slmdeploy.candidates import QuantizeSearch
from slmdeploy.config.gates import Gate, parse_fallback, parse_gates
from slmdeploy.config.options import check_keys
from slmdeploy.config.project import Project, adapter_name, resolve_source_path
from slmdeploy.config.search import parse_search
from slmdeploy.errors import ConfigError, plugin_code
from slmdeploy.host.registry import Provided, Registry
from slmdeploy.model.sources import check_gguf
from slmdeploy.plan.candidate_steps import candidate_steps, search_gates
from slmdeploy.plan.digests import DigestCache, source_digest
from slmdeploy.plan.steps import AUTO, Plan, Step, Variant
from slmdeploy.plan.variants import alternatives, axes, combine
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Metric, Stage

SELECTORS = {
    "convert": "plugin",
    "quantize": "plugin",
    "template": "family",
    "evaluate": "plugins",
    "register": "plugin",
}


def make_plan(project: Project, registry: Registry, digests: DigestCache) -> Plan:
    """Validate every stage table against its plugin and expand list-valued options into variants."""
    sources = resolve_sources(project)
    quantize = project.stages.get("quantize", {})
    search = parse_search(project, quantize["search"]) if "search" in quantize else None
    slots = [
        alternatives
        for stage in STAGE_ORDER
        if stage in project.stages
        for alternatives in _stage_steps(project, registry, stage, digests, search)
    ]
    variants = _variants(project, slots, sources, digests)
    _check_chain(project, variants[0].steps)
    with plugin_code("a plugin's slmdeploy_check_project hook"):
        registry.manager.hook.slmdeploy_check_project(project=project)
    base = sources[0][1] if len(sources) == 1 else attrs.evolve(sources[0][1], adapter=None)
    matrix = {"adapter": tuple(name for name, _ in sources)} if len(sources) > 1 else {}
    matrix |= {axis: tuple(values) for axis, values in axes(slots).items()}
    gates, metrics, fallback = _gates(project, variants)
    if search is not None:
        gates += search_gates(project, search, metrics)
        _refuse_fallback(project, fallback)
    digest = source_digest(base, digests)
    return Plan(project, base, digest, variants, gates, metrics, fallback, axes=matrix, search=search)


def _refuse_fallback(project: Project, fallback: tuple[str, ...]) -> None:
    if fallback:
        raise ConfigError(
            "[evaluate] fallback and [quantize] search both choose the variant to deploy",
            where=project.locate("evaluate.fallback"),
            fix="Leave out fallback: the search deploys the best candidate that meets its targets "
            "(and the gates of [evaluate.gates]).",
        )


def _variants(
    project: Project, slots: list[list[Step]], sources: list[tuple[str, SourceModel]], digests: DigestCache
) -> tuple[Variant, ...]:
    """Every combination of the slots, for each adapter: the base model is hashed once (the digest cache), each
    adapter's variants start from their own source."""
    variants = tuple(
        variant
        for prefix, source in sources
        for variant in combine(slots, source, source_digest(source, digests), prefix)
    )
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(
            f"two variants would both be named {twice[0]!r} (adapter names joined with variant values)",
            where=project.locate("source.adapter"),
            fix="Rename an adapter folder so that no adapter-value name repeats.",
        )
    return variants


def _gates(
    project: Project, variants: tuple[Variant, ...]
) -> tuple[tuple[Gate, ...], dict[str, Metric], tuple[str, ...]]:
    table = project.stages.get("evaluate", {})
    metrics = _metrics(project, variants[0].steps)
    gates = parse_gates(project, table.get("gates", {}), metrics)
    fallback: tuple[str, ...] = ()
    if "fallback" in table:
        fallback = parse_fallback(project, table["fallback"], [variant.name for variant in variants])
        if not metrics:
            raise ConfigError(
                "[evaluate] fallback needs evaluators and gates to decide when to fall back",
                where=project.locate("evaluate.fallback"),
                fix='Select evaluators (plugins = ["benchmark", "quality"]) and add thresholds in [evaluate.gates].',
            )
    return gates, metrics, fallback


def _metrics(project: Project, steps: tuple[Step, ...]) -> dict[str, Metric]:
    """The figures the evaluators measure; two evaluators may not claim one name."""
    found: dict[str, Metric] = {}
    owner: dict[str, str] = {}
    for step in steps:
        if step.stage != "evaluate" or step.provided is None:
            continue
        for name, metric in getattr(step.provided.cls, "METRICS", {}).items():
            if name in owner:
                raise ConfigError(
                    f"the evaluators {owner[name]!r} and {step.plugin_name!r} both measure a figure named {name!r}",
                    where=project.locate("evaluate.plugins"),
                    fix="Select one of them, or ask their authors to rename the figure.",
                )
            found[name], owner[name] = metric, step.plugin_name
    return found


def resolve_sources(project: Project) -> list[tuple[str, SourceModel]]:
    """The models variants start from, each with the prefix of its variants' names: ``[("", source)]`` for one
    adapter or none (today's names), ``[("support", ...), ("sales", ...)]`` for a list of adapters."""
    path = resolve_source_path(project)
    fmt = "gguf" if path.is_file() and path.suffix.lower() == ".gguf" else "hf"
    if fmt == "gguf":
        check_gguf(path, where=project.locate("source.package" if project.source.package else "source.path"))
    base = SourceModel(path, format=fmt, trust_remote_code=project.source.trust_remote_code)
    adapters = project.source.adapter
    if not adapters:
        return [("", base)]
    if isinstance(adapters, str):
        return [("", attrs.evolve(base, adapter=_adapter_folder(project, adapters)))]
    return [(adapter_name(folder), attrs.evolve(base, adapter=_adapter_folder(project, folder))) for folder in adapters]


def _adapter_folder(project: Project, folder: str) -> Path:
    adapter = (project.root / folder).resolve()
    if not adapter.is_dir():
        raise ConfigError(
            f"the LoRA adapter folder {adapter} does not exist",
            where=project.locate("source.adapter"),
            fix="Point [source] adapter at a PEFT adapter folder (adapter_config.json and weights).",
        )
    return adapter


def _stage_steps(
    project: Project, registry: Registry, stage: str, digests: DigestCache, search: QuantizeSearch | None
) -> Iterator[list[Step]]:
    """For one stage table, a slot per implementation it selects: the alternative steps, one per variant value."""
    table = project.stages[stage]
    selector = SELECTORS[stage]
    if stage == "evaluate":
        names = _evaluator_names(project, registry, table)
        check_keys(
            table, {selector: None, "gates": None, "fallback": None, **dict.fromkeys(names)}, stage, project.locate
        )
        for evaluator in names:
            provided = registry.get(stage, evaluator)
            assert provided is not None
            yield alternatives(project, stage, f"{stage}.{evaluator}", provided, table.get(evaluator, {}), digests)
        return
    name = table.get(selector, AUTO if stage == "template" else None)
    options = {key: value for key, value in table.items() if key != selector}
    if stage == "template" and name == AUTO:
        yield [Step(stage, stage, None, None, options, {})]
        return
    if stage == "quantize" and search is not None:
        del options["search"]
        yield candidate_steps(project, registry, _lookup(project, registry, stage, name), options, search, digests)
        return
    yield alternatives(project, stage, stage, _lookup(project, registry, stage, name), options, digests)


def _evaluator_names(project: Project, registry: Registry, table: Mapping[str, Any]) -> list[str]:
    names = table.get("plugins", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(
            f"[evaluate] plugins must be a list of strings, not {names!r}",
            where=project.locate("evaluate.plugins"),
            fix=_choices("evaluate", registry),
        )
    for name in names:
        _lookup(project, registry, "evaluate", name, key="evaluate.plugins")
    return names


def _lookup(project: Project, registry: Registry, stage: str, name: Any, key: str | None = None) -> Provided:
    key = key or f"{stage}.{SELECTORS[stage]}"
    if name is None:
        raise ConfigError(
            f"[{stage}] does not say which plugin to use",
            where=project.locate(stage),
            fix=f'Add {SELECTORS[stage]} = "<name>". {_choices(stage, registry)}',
        )
    provided = registry.get(stage, name) if isinstance(name, str) else None
    if provided is None:
        blocked = _blocked_by(registry, name)
        what = f"the {stage} plugin {name!r} is disabled {blocked[0]}" if blocked else None
        raise ConfigError(
            what or f"no installed {stage} plugin is named {name!r}",
            where=project.locate(key),
            fix=(f"{blocked[1]} to use it, or choose another. " if blocked else "") + _choices(stage, registry),
        )
    return provided


def _blocked_by(registry: Registry, name: Any) -> tuple[str, str] | None:
    """How the plugin that would provide `name` was disabled, and how to undo it: an entry point of that name (or
    ``template-<name>``) named by ``--disable-plugin`` or ``SLMDEPLOY_DISABLE_PLUGINS``."""
    disabled: dict[str, str] = getattr(registry.manager, "disabled", {})
    for plugin, by in disabled.items():
        if isinstance(name, str) and plugin in (name, f"template-{name}"):
            if by.startswith("--"):
                return f"on the command line ({by})", f"Leave out {by}"
            return f"by {by}={os.environ.get(by, '')}", f"Remove {plugin} from {by}"
    return None


def _choices(stage: str, registry: Registry) -> str:
    names = registry.names(stage)
    listing = ", ".join(repr(name) for name in names) if names else "none is installed"
    return f"Installed {stage} plugins: {listing} (see `slmdeploy plugins`)."


def _check_chain(project: Project, steps: tuple[Step, ...]) -> None:
    produced: type = SourceModel
    previous = "[source]"
    for step in steps:
        cls: type[Stage] = step.provided.cls if step.provided else STAGE_BASES[step.stage]
        if not issubclass(produced, cls.INPUT):
            needed = cls.INPUT.__name__
            raise ConfigError(
                f"[{step.table}] {step.plugin_name!r} needs a {needed}, but {previous} makes a {produced.__name__}",
                where=project.locate(step.table),
                fix=f"Add the stage that makes a {needed} before [{step.stage}] (stages run in the order "
                + ", ".join(STAGE_ORDER)
                + ").",
            )
        if step.stage != "evaluate":
            produced, previous = cls.OUTPUT, f"[{step.table}]"
