"""Running a plan: each step's output is looked up in the cache by its key, or made and committed."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Artifact, EvaluationReport, ModelInfo
from slmdeploy.config.options import unstructure
from slmdeploy.config.project import Project
from slmdeploy.errors import ConfigError, GateFailed, PluginError, SlmdeployError, StageError, plugin_code
from slmdeploy.execute.cache import Entry, Store
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.publish import REPORT, publish
from slmdeploy.execute.records import dump_artifact, load_artifact
from slmdeploy.execute.verdicts import GateResult, evaluation_record, evaluator_failed, gate_error, judge, write_reports
from slmdeploy.host.manager import Registry
from slmdeploy.plan.planner import Plan, Step, Variant, alternatives
from slmdeploy.stages import Stage, StageContext


@attrs.define
class StepResult:
    step: Step
    key: str
    entry: Entry
    artifact: Artifact
    cached: bool


@attrs.define
class _Position:
    """Where one variant is in the build: the artifact its next step takes, or why it stopped."""

    variant: Variant
    artifact: Artifact
    digest: str
    results: list[StepResult] = attrs.field(factory=list)
    error: SlmdeployError | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)
    gates: list[GateResult] | None = None
    """The judged gates, once the variant's evaluators ran."""


@attrs.define
class VariantResult:
    """A variant's steps, and its ``build/`` folder; or, when it failed, the error that stopped it."""

    variant: Variant
    results: list[StepResult]
    folder: Path | None
    published: bool
    error: SlmdeployError | None = None
    skipped: bool = False
    """A fallback variant that was not needed: the one before it passed its gates."""
    fell_back_to: str | None = None
    """For a variant that failed its gates: the later variant of the fallback chain that passed them."""

    @property
    def failed(self) -> bool:
        return self.error is not None and self.fell_back_to is None


class Pipeline:
    """Builds the variants of a plan into the project's cache and ``build/`` folder."""

    def __init__(self, plan: Plan, registry: Registry, store: Store, reporter: Reporter, jobs: int = 1) -> None:
        self.plan = plan
        self.registry = registry
        self.store = store
        self.reporter = reporter
        self.jobs = max(1, jobs)
        self.context_tables = plan.context_tables()

    def build(self) -> list[VariantResult]:
        """Run every variant's steps, level by level: a step several variants share runs once, and the
        distinct steps of one level run side by side when `jobs` and free memory allow. A variant that fails
        stops; the others go on and are published."""
        states = [_Position(variant, self.plan.source, self.plan.source_digest) for variant in self.plan.variants]
        chain = [next(state for state in states if state.variant.name == name) for name in self.plan.fallback]
        waiting = {id(state) for state in chain[1:]}
        self._build([state for state in states if id(state) not in waiting])
        for previous, following in itertools.pairwise(chain):
            if not isinstance(previous.error, GateFailed):
                break
            self.reporter.say(
                f"{previous.variant.name} failed its gates: building {following.variant.name} instead (fallback)"
            )
            waiting.discard(id(following))
            self._build([following])
        self.store.digests.save()
        finished = [self._finish(state) for state in states if id(state) not in waiting]
        passing = next(
            (state.variant.name for state in chain if id(state) not in waiting and state.error is None), None
        )
        for result in finished:
            if passing and result.variant.name in self.plan.fallback and isinstance(result.error, GateFailed):
                result.fell_back_to = passing
        if any(result.published for result in finished):
            folders = [result.folder for result in finished if result.folder is not None]
            write_reports(self.registry.manager, [folder for folder in folders if (folder / REPORT).is_file()])
        skipped = [
            VariantResult(state.variant, [], None, False, skipped=True) for state in states if id(state) in waiting
        ]
        return finished + skipped

    def _build(self, states: list[_Position]) -> None:
        for level in range(max(len(state.variant.steps) for state in states)):
            groups = self._group(level, [state for state in states if state.error is None])
            outcomes = self._run_level(groups)
            for key, members in groups.items():
                outcome = outcomes[key]
                for index, (state, step) in enumerate(members):
                    if isinstance(outcome, SlmdeployError):
                        state.error = outcome
                    else:
                        self._advance(state, attrs.evolve(outcome, step=step, cached=outcome.cached or index > 0))

    def _advance(self, state: _Position, result: StepResult) -> None:
        state.results.append(result)
        if not isinstance(result.artifact, EvaluationReport):
            state.artifact, state.digest = result.artifact, result.entry.output_digest
            return
        report = result.artifact
        state.metrics.update(report.summary.get("metrics", {}))
        if not report.passed:
            state.error = evaluator_failed(result.step.plugin_name, result.step.table, report)
        steps = state.variant.steps
        following = steps[len(state.results)] if len(state.results) < len(steps) else None
        if state.error is None and (following is None or following.stage != "evaluate"):
            state.gates = judge(self.plan.gates, state.metrics, self.plan.metrics)
            state.error = gate_error(self.plan, state.variant.name, state.gates)

    def _withdraw(self, state: _Position) -> None:
        """Undo an earlier build's registration of this very package, which no longer passes its gates."""
        steps = [step for step in state.variant.steps[len(state.results) :] if step.stage == "register"]
        for step in steps:
            entry = self.store.get(step.key(state.digest, self.context_tables, state.variant.name))
            if entry is None or step.provided is None:
                continue
            registration = load_artifact(entry, step.provided.cls.OUTPUT)
            with self.store.staging() as staged, plugin_code(f"register plugin {step.plugin_name!r} unregistering"):
                (staged / "scratch").mkdir()
                registrar = self._instantiate(state.variant, step, self.reporter.log, staged / "scratch")
                if registrar.is_current(registration):
                    removed = registrar.unregister(registration)  # type: ignore[attr-defined]
                    self.reporter.say(f"{state.variant.name}: {removed} (it no longer passes its gates)")

    def _group(self, level: int, states: list[_Position]) -> dict[str, list[tuple[_Position, Step]]]:
        """The steps of one level, by key: variants whose step has the same key share one run."""
        groups: dict[str, list[tuple[_Position, Step]]] = {}
        for state in states:
            if level < len(state.variant.steps):
                try:
                    step = self._resolve(state.variant.steps[level], state.artifact)
                except SlmdeployError as error:
                    state.error = error
                    continue
                key = step.key(state.digest, self.context_tables, state.variant.name)
                groups.setdefault(key, []).append((state, step))
        return groups

    def _finish(self, state: _Position) -> VariantResult:
        """Publish a built variant; one that failed its gates too (without registration), so its report can be
        read."""
        if state.error is not None and not isinstance(state.error, GateFailed):
            return VariantResult(state.variant, state.results, None, False, state.error)
        if state.error is not None:
            self._withdraw(state)
        reports = [(r.step.plugin_name, r.artifact) for r in state.results if isinstance(r.artifact, EvaluationReport)]
        record = evaluation_record(reports, state.metrics, state.gates, state.error, self.plan.metrics)
        folder, published = publish(self.plan, state.variant.name, state.results, record)
        return VariantResult(state.variant, state.results, folder, published, state.error)

    def _run_level(self, groups: dict[str, list[tuple[_Position, Step]]]) -> dict[str, StepResult | SlmdeployError]:
        tasks = {
            key: (members[0][1], members[0][0], ", ".join(m[0].variant.name for m in members))
            for key, members in groups.items()
        }
        parallel = min(self.jobs, len(tasks))
        if not tasks:
            return {}
        if parallel > 1 and not _fits_in_memory(state.artifact for _, state, _ in tasks.values()):
            parallel = 1
        if any(step.provided is not None and step.provided.cls.RUNS_ALONE for step, _, _ in tasks.values()):
            parallel = 1
        if parallel == 1:
            return {key: self._attempt(key, *task) for key, task in tasks.items()}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="stage") as pool:
            futures = {key: pool.submit(self._attempt, key, *task) for key, task in tasks.items()}
            wait(futures.values())
        return {key: future.result() for key, future in futures.items()}

    def _attempt(self, key: str, step: Step, state: _Position, variants: str) -> StepResult | SlmdeployError:
        """Run one step; a user-facing error becomes that variant's outcome (Ctrl-C and bugs still propagate)."""
        try:
            return self._run_step(key, step, state, variants)
        except SlmdeployError as error:
            return error

    def _resolve(self, step: Step, artifact: Artifact) -> Step:
        """Pick the template family for ``family = "auto"`` now that the model folder exists."""
        if step.provided is not None:
            return step
        project = self.plan.project
        try:
            with plugin_code("template dispatch (slmdeploy_template_family)"):
                name = self.registry.manager.hook.slmdeploy_template_family(model=ModelInfo.from_dir(artifact.path))
        except ConfigError as error:
            raise ConfigError(error.what, where=project.locate("template.family"), fix=error.fix) from error
        provided = self.registry.get("template", name)
        if provided is None:
            raise PluginError(
                f"template dispatch chose {name!r}, which no plugin registers",
                fix=f"Installed families: {', '.join(self.registry.names('template'))}.",
            )
        (resolved,) = alternatives(project, "template", "template", provided, step.raw, self.store.digests)
        return resolved

    def _run_step(self, key: str, step: Step, state: _Position, variants: str) -> StepResult:
        variant, artifact, digest = state.variant, state.artifact, state.digest
        label = f"{variants}: {step.table} ({step.plugin_name})"
        entry = self.store.get(key)
        if entry is not None:
            cached_artifact = load_artifact(entry, step.provided.cls.OUTPUT)  # type: ignore[union-attr]
            stage = self._instantiate(variant, step, self.reporter.log, self.store.tmp_dir)  # scratch: unused
            with plugin_code(f"{step.stage} plugin {step.plugin_name!r} checking its cached output"):
                current = stage.is_current(cached_artifact)
            if current:
                self.reporter.cached(label, entry.record.get("duration_s", 0.0))
                return StepResult(step, key, entry, cached_artifact, cached=True)
        with self.reporter.running(label) as log, self.store.staging() as staged:
            (staged / "scratch").mkdir()
            stage = self._instantiate(variant, step, log, staged / "scratch")
            started = time.monotonic()
            produced = _call_stage(step, stage, artifact, staged / "out")
            record = _record(step, digest, produced, staged / "out", time.monotonic() - started)
            shutil.rmtree(staged / "scratch")
            entry = self.store.commit(staged, key, record)
        return StepResult(step, key, entry, load_artifact(entry, stage.OUTPUT), cached=False)

    def _instantiate(self, variant: Variant, step: Step, log: Callable[[str], None], scratch: Path) -> Stage:
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


def _fits_in_memory(inputs: Iterable[Artifact]) -> bool:
    """Run stages side by side only while about three times their inputs fit in free memory (conversion and
    quantization hold their input, their output, and working copies)."""
    import psutil

    needed = 3 * sum(_size(Path(artifact.path)) for artifact in inputs)
    return bool(needed < psutil.virtual_memory().available)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


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


def preview(pipeline: Pipeline, variant: Variant) -> list[dict[str, Any]]:
    """What `build` would do for a variant: each step cached, to run, or waiting on an earlier step."""
    artifact: Artifact | None = pipeline.plan.source
    digest: str | None = pipeline.plan.source_digest
    rows = []
    for planned in variant.steps:
        step = pipeline._resolve(planned, artifact) if artifact is not None else planned
        row = {"stage": step.stage, "table": step.table, "plugin": step.plugin_name, "status": "run", "key": None}
        rows.append(row)
        if digest is None or step.provided is None:
            continue
        row["key"] = key = step.key(digest, pipeline.context_tables, variant.name)
        entry = pipeline.store.get(key)
        if entry is None:
            artifact = digest = None
            continue
        cached = load_artifact(entry, step.provided.cls.OUTPUT)
        row["status"] = "cached"
        if not isinstance(cached, EvaluationReport):
            artifact, digest = cached, entry.output_digest
    return rows
