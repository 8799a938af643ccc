"""``slmdeploy clean --registry``: undo what registrars did, from the registrations recorded in the cache."""

from __future__ import annotations

from slmdeploy.config.options import structure_table
from slmdeploy.config.project import Project
from slmdeploy.execute.cache import Store
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.records import load_artifact
from slmdeploy.execute.steps import instantiate
from slmdeploy.host.registry import Registry


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
