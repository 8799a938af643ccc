"""What registrars did, from the registrations recorded in the cache: undone by ``slmdeploy clean --registry``,
checked against the registrars' own files by ``slmdeploy ls``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Registration
from slmdeploy.config.options import structure_table
from slmdeploy.config.project import Project
from slmdeploy.deployed import DeployedModel
from slmdeploy.errors import SlmdeployError, plugin_code
from slmdeploy.execute.cache import Store
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.records import converter, load_artifact
from slmdeploy.execute.runner import instantiate
from slmdeploy.host.registry import Registry
from slmdeploy.plan.digests import stable_json
from slmdeploy.stages import Leftover


def unregister_all(project: Project, registry: Registry, store: Store, reporter: Reporter) -> list[str]:
    """Ask each registrar to undo the registrations found in the cache; report what each one removed.

    Needs only the project file's core tables, not a plan: the source model may be gone."""
    lines = []
    for entry in store.entries():
        if entry.record.get("stage") != "register":
            continue
        provided = registry.get("register", entry.record["plugin"])
        model_id = entry.record["artifact"].get("model_id")
        if provided is None:
            lines.append(f"skipped {model_id}: the registrar {entry.record['plugin']!r} is not installed")
            continue
        options = structure_table(provided.cls.Options, entry.record["options"], "register", project.locate)
        with store.staging() as staged:
            (staged / "scratch").mkdir()
            registrar = instantiate(project, store, provided.cls, options, "clean", reporter.log, staged / "scratch")
            lines.append(registrar.unregister(load_artifact(entry, provided.cls.OUTPUT)))  # type: ignore[attr-defined]
    return lines


@attrs.frozen
class RegistryCheck:
    """What ``slmdeploy ls`` adds to the build folder's manifests, from the registrars' own files."""

    stale: frozenset[str]
    """Names of deployed models whose recorded registration is no longer current (unregistered or removed by
    hand, or its folder replaced by a later registration that was cut short)."""
    leftovers: tuple[Leftover, ...]
    """Things placed for this project that no build recorded."""


def check_registrations(
    project: Project, registry: Registry, store: Store, models: list[DeployedModel]
) -> RegistryCheck:
    """Ask the registrars of the project (its [register] table, and every configuration the cache recorded)
    whether the manifests' registrations are current, and what they placed that no recorded registration
    accounts for. Files only: no runtime is started. A registrar that is not installed, or options that no
    longer parse, are skipped: ``ls`` lists what the manifests say whatever the project file holds now."""
    recorded = [(item.record["plugin"], item.record["options"], item.record["artifact"]) for item in _entries(store)]
    table = dict(project.stages.get("register", {}))
    plugin = table.pop("plugin", None)
    configurations = [(name, options) for name, options, _ in recorded]
    if isinstance(plugin, str):
        configurations.append((plugin, table))
    stale: set[str] = set()
    leftovers: dict[tuple[str, str], Leftover] = {}
    with tempfile.TemporaryDirectory(prefix="slmdeploy-ls-") as scratch:
        made: dict[str, Any] = {}

        def registrar(name: str, options: dict[str, Any]) -> Any:
            key = stable_json([name, options])
            if key not in made:
                made[key] = _registrar(project, registry, store, name, options, Path(scratch))
            return made[key]

        for model in models:
            if not model.registration:
                continue
            name, options = next(
                ((name, options) for name, options, artifact in recorded if artifact == model.registration),
                (plugin, table),
            )
            found = registrar(name, options) if isinstance(name, str) else None
            if found is not None:
                with plugin_code(f"register plugin {name!r} checking {model.name}'s registration"):
                    if not found.is_current(_registration(model.registration)):
                        stale.add(model.name)
        registrations = [_registration(artifact) for _, _, artifact in recorded]
        registrations += [_registration(model.registration) for model in models if model.registration]
        for name, options in configurations:
            found = registrar(name, options)
            if found is None:
                continue
            with plugin_code(f"register plugin {name!r} listing what it placed"):
                for leftover in found.leftovers(registrations):
                    leftovers[(leftover.model_id, str(leftover.path))] = leftover
    return RegistryCheck(frozenset(stale), tuple(leftovers.values()))


def _entries(store: Store) -> list[Any]:
    return [entry for entry in store.entries() if entry.record.get("stage") == "register"]


def _registration(artifact: dict[str, Any]) -> Registration:
    """A recorded registration (a cache entry's or a manifest's artifact) as the registrar's own class reads it."""
    return converter.structure(artifact, Registration)


def _registrar(project: Project, registry: Registry, store: Store, name: str, options: Any, scratch: Path) -> Any:
    provided = registry.get("register", name)
    if provided is None:
        return None
    try:
        structured = structure_table(provided.cls.Options, options, "register", project.locate)
    except SlmdeployError:
        return None
    return instantiate(project, store, provided.cls, structured, "ls", lambda line: None, scratch)
