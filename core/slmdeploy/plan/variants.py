"""Variants: a stage table's list-valued options (``precision = ["int4", "int8"]``) expanded into alternative
steps, one per value, and the variants they combine into."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from slmdeploy.artifacts import SourceModel
from slmdeploy.config.options import fields_of, structure_table
from slmdeploy.config.project import NAME_PATTERN, Project, existing_path
from slmdeploy.errors import ConfigError, plugin_code
from slmdeploy.host.registry import Provided
from slmdeploy.plan.digests import DigestCache
from slmdeploy.plan.steps import Step, Variant


def alternatives(
    project: Project, stage: str, key: str, provided: Provided, table: Mapping[str, Any], digests: DigestCache
) -> list[Step]:
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
        what = f"[{key}] {field.name} names {{path}}, which does not exist"
        path = existing_path(
            project, str(value), f"{key}.{field.name}", what, f"{field.name}: {field.metadata['help']}."
        )
        found[field.name] = digests.tree_digest(path)
    return found


def combine(slots: list[list[Step]], source: SourceModel, source_digest: str, prefix: str = "") -> Iterator[Variant]:
    """One variant per combination of the slots' alternatives (a slot is one step's list-valued options), each
    built from `source`; `prefix` (an adapter's name) starts every name."""
    seen: set[str] = set()
    for combination in itertools.product(*slots):
        names = [prefix] if prefix else []
        names += [str(step.raw[axis]) for step in combination for axis in _axes(step) if axis in step.raw]
        names += [step.label for step in combination if step.label]
        name = "-".join(names) or "default"
        if not NAME_PATTERN.fullmatch(name) or name in seen:
            raise ConfigError(
                f"the variant name {name!r} (from {', '.join(names)}) is not usable as a folder name, "
                "or two variants share it",
                where=combination[0].table,
                fix="Give variant options values made of letters, digits, '.', '_' and '-'.",
            )
        seen.add(name)
        yield Variant(name, tuple(combination), source, source_digest)


def axes(slots: list[list[Step]]) -> dict[str, list[str]]:
    """The variant axes of the slots and their values, for showing the matrix: ``{"precision": ["int4", "int8"]}``."""
    found: dict[str, list[str]] = {}
    for slot in slots:
        for step in slot:
            for axis in _axes(step):
                if axis in step.raw and str(step.raw[axis]) not in found.setdefault(axis, []):
                    found[axis].append(str(step.raw[axis]))
    return {axis: values for axis, values in found.items() if len(values) > 1}


def _axes(step: Step) -> list[str]:
    if step.provided is None or step.label:
        return []
    return [field.name for field in fields_of(step.provided.cls.Options) if field.metadata.get("variants")]
