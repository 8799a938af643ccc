"""Running one step: its output is found in the cache (and still current outside it), or made in a staging
folder and committed under the step's key."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Artifact, ModelInfo
from slmdeploy.config.project import Project
from slmdeploy.errors import ConfigError, PluginError, SlmdeployError, filesystem_error, plugin_code
from slmdeploy.execute.cache import Entry, Store
from slmdeploy.execute.jobs import Job, StageSetup
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.records import load_artifact
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
        return step.key(input_digest, self.context_tables, variant.name, _applied_adapter(variant, step))

    def attempt(self, task: Task, submitted: float | None = None) -> Outcome:
        """Run one step here; a user-facing error becomes that variant's outcome (Ctrl-C and bugs still
        propagate). `submitted` is when the executor queued it (wall clock), for the manifest's queue time."""
        try:
            return self.run(task, time.time() if submitted is None else submitted)
        except SlmdeployError as error:
            return error
        except OSError as error:
            found = filesystem_error(error, self.store.tmp_dir)
            if found is None:
                raise
            return found

    def run(self, task: Task, submitted: float) -> StepResult:
        found = self.lookup(task)
        if found is not None:
            return found
        job = self.job(task)
        with self.reporter.running(label(task)) as log:
            entry = job.make(self.store, log, socket.gethostname(), submitted)
        return self.made(task, entry)

    def lookup(self, task: Task) -> StepResult | None:
        """The step's output from the cache, when it is there and its stage finds it current (reported as
        cached); None when the step must run."""
        found = self.cached(task.key, task.step, task.variant)
        if found is None or not found.current:
            return None
        self.reporter.cached(label(task), found.entry.record.get("duration_s", 0.0))
        return StepResult(task.step, task.key, found.entry, found.artifact, cached=True)

    def job(self, task: Task) -> Job:
        """The making of a task's step, as plain data an executor can send to another machine."""
        setup, store = self.setup(task.variant, task.step), self.store
        inputs = (task.artifact, task.digest, task.input_entry)
        return Job(task.key, task.step, setup, *inputs, store.state_dir, store.root)

    def made(self, task: Task, entry: Entry) -> StepResult:
        """The result of a step an executor made into `entry`."""
        assert task.step.provided is not None
        return StepResult(task.step, task.key, entry, load_artifact(entry, task.step.provided.cls.OUTPUT), cached=False)

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

    def setup(self, variant: Variant, step: Step) -> StageSetup:
        assert step.provided is not None
        cls, project = step.provided.cls, self.plan.project
        tables = {name: self.context_tables[name] for name in cls.CONTEXT_TABLES}
        name, version = project.project.name, project.project.version
        adapter = _applied_adapter(variant, step)
        source, digest = variant.evaluated_source() if adapter else (variant.source, variant.source_digest)
        return StageSetup(
            cls, step.options, variant.name, project.root, name, version, tables, source, digest, adapter or None
        )

    def instantiate(self, variant: Variant, step: Step, log: Callable[[str], None], scratch: Path) -> Stage:
        return self.setup(variant, step).instantiate(self.store, log, scratch)


def _applied_adapter(variant: Variant, step: Step) -> str:
    """The runtime adapter a step of `variant` applies: an adapter variant's evaluators do; its other steps are its
    base variant's own (the same key, made once)."""
    return variant.adapter if step.stage == "evaluate" else ""


def label(task: Task) -> str:
    """How progress lines name a task: ``int4, int8: quantize (olive)``."""
    return f"{task.label}: {task.step.table} ({task.step.plugin_name})"


def instantiate(
    project: Project,
    store: Store,
    cls: type[Stage],
    options: Any,
    variant: str,
    log: Callable[[str], None],
    scratch: Path,
) -> Stage:
    """A stage object with its context outside a plan (``clean --registry``): the project, the core tables it asked
    for, its folders."""
    context = StageContext(
        project_dir=project.root,
        project_name=project.project.name,
        project_version=project.project.version,
        variant=variant,
        tables={name: project.core_table(name) for name in cls.CONTEXT_TABLES},
        log=log,
        scratch=scratch,
        logs_dir=store.logs_dir,
        shared=store.shared,
    )
    return cls(options, context)


_TABLE_KEY = re.compile(r"^\[(?P<table>[\w.-]+)\] (?P<key>[\w-]+)$")


def locate(project: Project, error: SlmdeployError) -> SlmdeployError:
    """A plugin's ``where="[quantize] keep_float"`` as the key's place in the project file: ``slmdeploy.toml:14
    [quantize] keep_float`` (a plugin, or a job on another machine, does not know the file's lines)."""
    found = _TABLE_KEY.match(error.where or "")
    if found is not None:
        error.where = f"{project.locate(found['table'] + '.' + found['key'])} {error.where}"
    return error
