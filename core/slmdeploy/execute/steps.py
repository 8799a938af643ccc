"""Running one step: its output is found in the cache (and still current outside it), or made in a staging
folder and committed under the step's key."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Artifact, ModelInfo
from slmdeploy.config.options import unstructure
from slmdeploy.config.project import Project
from slmdeploy.errors import ConfigError, GateFailed, PluginError, SlmdeployError, StageError, plugin_code
from slmdeploy.execute.cache import Entry, Store
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.records import dump_artifact, load_artifact
from slmdeploy.execute.results import Outcome, StepResult, Task
from slmdeploy.host.registry import Registry
from slmdeploy.plan.steps import Plan, Step, Variant
from slmdeploy.plan.variants import alternatives
from slmdeploy.stages import Stage, StageContext


@attrs.frozen
class CachedOutput:
    """A step's cache entry, its artifact, and whether the stage finds it still current outside the cache."""

    entry: Entry
    artifact: Artifact
    current: bool


class StepRunner:
    """Runs the steps of a plan's variants against the project's cache."""

    def __init__(self, plan: Plan, registry: Registry, store: Store, reporter: Reporter) -> None:
        self.plan = plan
        self.registry = registry
        self.store = store
        self.reporter = reporter
        self.context_tables = plan.context_tables()

    def key(self, step: Step, input_digest: str, variant: Variant) -> str:
        return step.key(input_digest, self.context_tables, variant.name)

    def attempt(self, task: Task) -> Outcome:
        """Run one step; a user-facing error becomes that variant's outcome (Ctrl-C and bugs still propagate)."""
        try:
            return self.run(task)
        except SlmdeployError as error:
            return error

    def run(self, task: Task) -> StepResult:
        step = task.step
        label = f"{task.label}: {step.table} ({step.plugin_name})"
        found = self.cached(task.key, step, task.variant)
        if found is not None and found.current:
            self.reporter.cached(label, found.entry.record.get("duration_s", 0.0))
            return StepResult(step, task.key, found.entry, found.artifact, cached=True)
        with self.reporter.running(label) as log, self.store.staging() as staged:
            (staged / "scratch").mkdir()
            stage = self.instantiate(task.variant, step, log, staged / "scratch")
            started = time.monotonic()
            produced = _call_stage(step, stage, task.artifact, staged / "out")
            record = _record(step, task.digest, produced, staged / "out", time.monotonic() - started)
            shutil.rmtree(staged / "scratch")
            entry = self.store.commit(staged, task.key, record)
        return StepResult(step, task.key, entry, load_artifact(entry, stage.OUTPUT), cached=False)

    def cached(self, key: str, step: Step, variant: Variant) -> CachedOutput | None:
        """The step's output in the cache, if there is one, and whether its stage finds it still current."""
        entry = self.store.get(key)
        if entry is None:
            return None
        artifact = load_artifact(entry, step.provided.cls.OUTPUT)  # type: ignore[union-attr]
        stage = self.instantiate(variant, step, self.reporter.log, self.store.tmp_dir)  # scratch: unused
        with plugin_code(f"{step.stage} plugin {step.plugin_name!r} checking its cached output"):
            current = stage.is_current(artifact)
        return CachedOutput(entry, artifact, bool(current))

    def resolve(self, step: Step, artifact: Artifact) -> Step:
        """Pick the template family for ``family = "auto"`` now that the model folder exists."""
        if step.provided is not None:
            return step
        name = self.dispatch_template(artifact)
        provided = self.registry.get("template", name)
        if provided is None:
            raise PluginError(
                f"template dispatch chose {name!r}, which no plugin registers",
                fix=f"Installed families: {', '.join(self.registry.names('template'))}.",
            )
        project = self.plan.project
        (resolved,) = alternatives(project, "template", "template", provided, step.raw, self.store.digests)
        return resolved

    def dispatch_template(self, artifact: Artifact) -> str:
        """The template family `slmdeploy_template_family` picks for the model folder of `artifact`."""
        try:
            with plugin_code("template dispatch (slmdeploy_template_family)"):
                name: str = self.registry.manager.hook.slmdeploy_template_family(
                    model=ModelInfo.from_dir(artifact.path)
                )
        except ConfigError as error:
            raise ConfigError(error.what, where=self.plan.project.locate("template.family"), fix=error.fix) from error
        return name

    def instantiate(self, variant: Variant, step: Step, log: Callable[[str], None], scratch: Path) -> Stage:
        assert step.provided is not None
        stage = instantiate(self.plan.project, self.store, step.provided.cls, step.options, variant.name, log, scratch)
        stage.context.source, stage.context.source_digest = self.plan.source, self.plan.source_digest
        return stage


def instantiate(
    project: Project,
    store: Store,
    cls: type[Stage],
    options: Any,
    variant: str,
    log: Callable[[str], None],
    scratch: Path,
) -> Stage:
    """A stage object with its context: the project, the core tables it asked for, its folders."""
    context = StageContext(
        project_dir=project.root,
        project_name=project.project.name,
        project_version=project.project.version,
        variant=variant,
        tables={name: project.core_table(name) for name in cls.CONTEXT_TABLES},
        log=log,
        scratch=scratch,
        logs_dir=store.state_dir / "logs",
        shared=store.shared,
    )
    return cls(options, context)


def _call_stage(step: Step, stage: Stage, artifact: Artifact, output_dir: Path) -> Artifact:
    name = f"{step.stage} plugin {step.plugin_name!r}"
    try:
        produced = stage.run(artifact, output_dir)
    except GateFailed:
        raise
    except SlmdeployError as error:
        kind = type(error) if type(error).__init__ is SlmdeployError.__init__ else StageError
        raise kind(f"{name} failed: {error.what}", where=error.where, fix=error.fix) from error
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as error:
        raise PluginError(
            f"{name} crashed: {error!r}",
            fix="Run again with --debug for the traceback, and report it to the plugin's authors.",
        ) from error
    if not isinstance(produced, stage.OUTPUT):
        raise PluginError(
            f"{name} returned {produced!r}, not a {stage.OUTPUT.__name__}", fix="Report this to the plugin's authors."
        )
    return produced


def _record(step: Step, input_digest: str, artifact: Artifact, out: Path, duration: float) -> dict[str, Any]:
    assert step.provided is not None
    cls = type(artifact)
    return {
        "stage": step.stage,
        "table": step.table,
        "plugin": step.plugin_name,
        "plugin_version": step.provided.version,
        "provided_by": step.provided.origin,
        "options": unstructure(step.options),
        "input_digest": input_digest,
        "duration_s": round(duration, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact_type": f"{cls.__module__}:{cls.__qualname__}",
        "artifact": dump_artifact(artifact, out),
    }
