"""Planning: from a project file and the installed plugins to the steps each variant runs.

Everything a user can get wrong in the project file is found here, before any stage runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from slmdeploy.artifacts import SourceModel
from slmdeploy.config.gates import Gate, parse_fallback, parse_gates
from slmdeploy.config.options import check_keys, fields_of, structure_table, unstructure
from slmdeploy.config.project import NAME_PATTERN, Project, resolve_source_path
from slmdeploy.errors import ConfigError, plugin_code
from slmdeploy.host.manager import Provided, Registry
from slmdeploy.plan.digests import DigestCache, sha256_text, stable_json
from slmdeploy.stages import STAGE_BASES, STAGE_ORDER, Metric, Stage

SELECTORS = {
    "convert": "plugin",
    "quantize": "plugin",
    "template": "family",
    "evaluate": "plugins",
    "register": "plugin",
}
AUTO = "auto"


@attrs.frozen
class Step:
    """One stage of one variant: which implementation runs, with which validated options."""

    stage: str
    table: str
    """The key path of the step's table: ``quantize`` or ``evaluate.benchmark``."""
    provided: Provided | None
    """None for a template step with ``family = "auto"``, resolved when its input exists."""
    options: Any
    raw: Mapping[str, Any]
    path_digests: Mapping[str, str]

    @property
    def plugin_name(self) -> str:
        return self.provided.cls.PLUGIN_NAME if self.provided else AUTO

    def key(self, input_digest: str, context_tables: Mapping[str, Any], variant: str) -> str:
        """The content address of this step's output."""
        assert self.provided is not None
        cls = self.provided.cls
        return sha256_text(
            stable_json(
                {
                    "stage": self.stage,
                    "plugin": cls.PLUGIN_NAME,
                    "class": f"{cls.__module__}.{cls.__qualname__}",
                    "version": self.provided.version,
                    "cache_version": cls.cache_version(),
                    "variant": variant if cls.VARIANT_IN_KEY else None,
                    "options": unstructure(self.options),
                    "files": dict(self.path_digests),
                    "context": {name: context_tables[name] for name in cls.CONTEXT_TABLES},
                    "input": input_digest,
                }
            )
        )


@attrs.frozen
class Variant:
    name: str
    steps: tuple[Step, ...]


@attrs.frozen
class Plan:
    project: Project
    source: SourceModel
    source_digest: str
    variants: tuple[Variant, ...]
    gates: tuple[Gate, ...] = ()
    metrics: Mapping[str, Metric] = attrs.field(factory=dict)
    """What the variants' evaluators measure, by name."""
    fallback: tuple[str, ...] = ()
    """Variant names in order of preference: each is built only when the one before it failed a gate."""

    def context_tables(self) -> dict[str, Any]:
        return {name: self.project.core_table(name) for name in ("project", "generation")}


def make_plan(project: Project, registry: Registry, digests: DigestCache) -> Plan:
    """Validate every stage table against its plugin and expand list-valued options into variants."""
    source = resolve_source(project)
    slots = [
        alternatives
        for stage in STAGE_ORDER
        if stage in project.stages
        for alternatives in _stage_steps(project, registry, stage, digests)
    ]
    variants = tuple(_variants(slots))
    _check_chain(project, variants[0].steps)
    with plugin_code("a plugin's slmdeploy_check_project hook"):
        registry.manager.hook.slmdeploy_check_project(project=project)
    source_digest = digests.tree_digest(source.path)
    if source.adapter is not None:
        source_digest = sha256_text(source_digest + digests.tree_digest(source.adapter))
    return Plan(project, source, source_digest, variants, *_gates(project, variants))


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


def resolve_source(project: Project) -> SourceModel:
    path = resolve_source_path(project)
    adapter = None
    if project.source.adapter:
        adapter = (project.root / project.source.adapter).resolve()
        if not adapter.is_dir():
            raise ConfigError(
                f"the LoRA adapter folder {adapter} does not exist",
                where=project.locate("source.adapter"),
                fix="Point [source] adapter at a PEFT adapter folder (adapter_config.json and weights).",
            )
    fmt = "gguf" if path.is_file() and path.suffix.lower() == ".gguf" else "hf"
    return SourceModel(path, format=fmt, adapter=adapter, trust_remote_code=project.source.trust_remote_code)


def _stage_steps(project: Project, registry: Registry, stage: str, digests: DigestCache) -> Iterator[list[Step]]:
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
        raise ConfigError(
            f"no installed {stage} plugin is named {name!r}", where=project.locate(key), fix=_choices(stage, registry)
        )
    return provided


def _choices(stage: str, registry: Registry) -> str:
    names = registry.names(stage)
    listing = ", ".join(repr(name) for name in names) if names else "none is installed"
    return f"Installed {stage} plugins: {listing} (see `slmdeploy plugins`)."


def alternatives(
    project: Project, stage: str, key: str, provided: Provided, table: Mapping[str, Any], digests: DigestCache
) -> list[Step]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{key}] must be a table", where=project.locate(key), fix=f"Write it as [{key}].")
    axes = {
        field.name: table[field.name]
        for field in fields_of(provided.cls.Options)
        if field.metadata.get("variants") and isinstance(table.get(field.name), list)
    }
    for name, values in axes.items():
        if not values or len(set(map(str, values))) != len(values):
            raise ConfigError(
                f"[{key}] {name} must list at least one value, each once, not {values!r}",
                where=project.locate(f"{key}.{name}"),
                fix="Remove the duplicates or give one value.",
            )
    steps = []
    for combination in itertools.product(*axes.values()):
        raw = {**table, **dict(zip(axes, combination, strict=True))}
        options = structure_table(provided.cls.Options, raw, key, project.locate)
        with plugin_code(f"{stage} plugin {provided.cls.PLUGIN_NAME!r} ({provided.origin}) checking [{key}]"):
            provided.cls.check(options)
        path_digests = _path_digests(project, key, provided.cls.Options, options, digests)
        steps.append(Step(stage, key, provided, options, raw, path_digests))
    return steps


def _path_digests(project: Project, key: str, cls: type, options: Any, digests: DigestCache) -> dict[str, str]:
    found = {}
    for field in fields_of(cls):
        value = getattr(options, field.name)
        if not field.metadata.get("path") or value in (None, ""):
            continue
        path = (project.root / str(value)).resolve()
        if not path.exists():
            raise ConfigError(
                f"[{key}] {field.name} names {path}, which does not exist",
                where=project.locate(f"{key}.{field.name}"),
                fix=f"{field.name}: {field.metadata['help']}.",
            )
        found[field.name] = digests.tree_digest(path)
    return found


def _variants(slots: list[list[Step]]) -> Iterator[Variant]:
    """One variant per combination of the slots' alternatives (a slot is one step's list-valued options)."""
    seen: set[str] = set()
    for combination in itertools.product(*slots):
        names = [str(step.raw[axis]) for step in combination for axis in _axes(step) if axis in step.raw]
        name = "-".join(names) or "default"
        if not NAME_PATTERN.fullmatch(name) or name in seen:
            raise ConfigError(
                f"the variant name {name!r} (from {', '.join(names)}) is not usable as a folder name, "
                "or two variants share it",
                where=combination[0].table,
                fix="Give variant options values made of letters, digits, '.', '_' and '-'.",
            )
        seen.add(name)
        yield Variant(name, tuple(combination))


def _axes(step: Step) -> list[str]:
    if step.provided is None:
        return []
    return [field.name for field in fields_of(step.provided.cls.Options) if field.metadata.get("variants")]


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
