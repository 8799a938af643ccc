"""Planning: from the checked project options and the installed plugins to the steps each variant runs.

The project file was checked where it was loaded (`slmdeploy.config.project_options`); what is found here is only
what needs the installed plugins: an implementation that is not installed, a stage table's keys against its
implementation's `Options`, stages that do not chain, gates on figures no evaluator measures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs

from slmdeploy.artifacts import SourceModel, adapter_variant
from slmdeploy.config.gates import Gate, check_fallback_variants, check_figures
from slmdeploy.config.project import adapter_name
from slmdeploy.config.project_options import AUTO, SELECTORS, ProjectOptions, StageTable
from slmdeploy.errors import ConfigError, plugin_code
from slmdeploy.host.registry import Provided, Registry
from slmdeploy.plan.candidate_steps import candidate_steps, search_gates
from slmdeploy.plan.digests import DigestCache, source_digest
from slmdeploy.plan.steps import Plan, Step, Variant
from slmdeploy.plan.variants import alternatives, axes, combine
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Metric, Stage


def make_plan(options: ProjectOptions, registry: Registry, digests: DigestCache) -> Plan:
    """Validate every stage table against its plugin and expand list-valued options into variants."""
    project = options.project
    slots = [
        alternatives for table in options.stages for alternatives in _stage_steps(options, registry, table, digests)
    ]
    variants = _variants(options, slots, digests)
    _check_chain(options, variants[0].steps)
    _check_runtime_adapters(options, variants[0].steps)
    with plugin_code("a plugin's slmdeploy_check_project hook"):
        registry.manager.hook.slmdeploy_check_project(project=project, options=options)
    sources = options.sources
    base = sources[0].model if len(sources) == 1 else attrs.evolve(sources[0].model, adapter=None)
    matrix = {"adapter": tuple(source.prefix for source in sources)} if len(sources) > 1 else {}
    matrix |= {axis: tuple(values) for axis, values in axes(slots).items()}
    gates, metrics = _gates(options, variants)
    if options.search is not None:
        gates += search_gates(project, options.search, metrics)
    digest = source_digest(base, digests)
    return Plan(project, base, digest, variants, gates, metrics, options.fallback, axes=matrix, search=options.search)


def _variants(options: ProjectOptions, slots: list[list[Step]], digests: DigestCache) -> tuple[Variant, ...]:
    """Every combination of the slots, for each adapter: the base model is hashed once (the digest cache), each
    adapter's variants start from their own source."""
    variants = tuple(
        variant
        for source in options.sources
        for variant in combine(slots, source.model, source_digest(source.model, digests), source.prefix)
    )
    variants += tuple(adapter for variant in variants for adapter in _runtime_adapter_variants(variant, digests))
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(
            f"two variants would both be named {twice[0]!r} (adapter names joined with variant values)",
            where=options.project.locate("source.adapter"),
            fix="Rename an adapter folder so that no adapter-value name repeats.",
        )
    return variants


def _runtime_adapter_variants(base: Variant, digests: DigestCache) -> Iterator[Variant]:
    """With ``[convert] adapters = "runtime"``, one variant per adapter and base variant, ``<adapter>-<base>``: the
    base's steps up to its evaluators (shared, made once), its evaluators with the adapter applied against the base
    with that adapter merged, and no registration (a registry runs the base's folder, which applies no adapter)."""
    for folder in base.source.adapters:
        name = adapter_name(str(folder))
        reference = attrs.evolve(base.source, adapter=folder, adapters=())
        steps = tuple(step for step in base.steps if step.stage != "register")
        yield Variant(
            adapter_variant(name, base.name),
            steps,
            base.source,
            base.source_digest,
            adapter=name,
            base=base.name,
            reference=reference,
            reference_digest=source_digest(reference, digests),
        )


def _gates(options: ProjectOptions, variants: tuple[Variant, ...]) -> tuple[tuple[Gate, ...], dict[str, Metric]]:
    """The gates, each on a figure the selected evaluators measure; the fallback's variants, built by this plan."""
    project = options.project
    metrics = _metrics(options, variants[0].steps)
    check_figures(project, options.gates, metrics)
    if not any(variant.adapter for variant in variants):
        for gate in options.gates:
            if metrics[gate.metric].adapter_only:
                raise ConfigError(
                    f"[evaluate.gates] {gate.key} bounds {gate.metric}, which only a runtime adapter's variant "
                    "measures, and this project has none",
                    where=project.locate(f"evaluate.gates.{gate.key}"),
                    fix='List LoRA adapters in [source] adapter with [convert] adapters = "runtime", or remove the '
                    "gate.",
                )
    if options.fallback:
        check_fallback_variants(project, options.fallback, [variant.name for variant in variants])
        if not metrics:
            raise ConfigError(
                "[evaluate] fallback needs evaluators and gates to decide when to fall back",
                where=project.locate("evaluate.fallback"),
                fix='Select evaluators (plugins = ["benchmark", "quality"]) and add thresholds in [evaluate.gates].',
            )
    return options.gates, metrics


def _metrics(options: ProjectOptions, steps: tuple[Step, ...]) -> dict[str, Metric]:
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
                    where=options.project.locate("evaluate.plugins"),
                    fix="Select one of them, or ask their authors to rename the figure.",
                )
            found[name], owner[name] = metric, step.plugin_name
    return found


def _stage_steps(
    options: ProjectOptions, registry: Registry, table: StageTable, digests: DigestCache
) -> Iterator[list[Step]]:
    """For one stage table, a slot: the alternative steps of the implementation it selects, one per variant value."""
    project, stage = options.project, table.stage
    if stage == "template" and table.name == AUTO:
        yield [Step(stage, stage, None, None, dict(table.options), {})]
        return
    key = "evaluate.plugins" if stage == "evaluate" else None
    provided = _lookup(options, registry, stage, table.name, key)
    if stage == "quantize" and options.search is not None:
        yield candidate_steps(project, registry, provided, table.options, options.search, digests)
        return
    yield alternatives(project, stage, table.key, provided, table.options, digests)


def _lookup(options: ProjectOptions, registry: Registry, stage: str, name: Any, key: str | None = None) -> Provided:
    project = options.project
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


def _check_runtime_adapters(options: ProjectOptions, steps: tuple[Step, ...]) -> None:
    """``[convert] adapters = "runtime"`` needs a converter that writes adapter files."""
    convert = next((step for step in steps if step.stage == "convert"), None)
    if options.adapters != "runtime" or convert is None or convert.provided is None:
        return
    if getattr(convert.provided.cls, "RUNTIME_ADAPTERS", False):
        return
    raise ConfigError(
        f'[convert] adapters = "runtime", but the convert plugin {convert.plugin_name!r} does not make adapter files',
        where=options.project.locate("convert.adapters"),
        fix='Use adapters = "merge" (each adapter merged into its own copy of the base), or plugin = "olive".',
    )


def _check_chain(options: ProjectOptions, steps: tuple[Step, ...]) -> None:
    produced: type = SourceModel
    previous = "[source]"
    for step in steps:
        cls: type[Stage] = step.provided.cls if step.provided else STAGE_BASES[step.stage]
        if not issubclass(produced, cls.INPUT):
            needed = cls.INPUT.__name__
            raise ConfigError(
                f"[{step.table}] {step.plugin_name!r} needs a {needed}, but {previous} makes a {produced.__name__}",
                where=options.project.locate(step.table),
                fix=f"Add the stage that makes a {needed} before [{step.stage}] (stages run in the order "
                + ", ".join(STAGE_ORDER)
                + ").",
            )
        if step.stage != "evaluate":
            produced, previous = cls.OUTPUT, f"[{step.table}]"
