"""Building a plan: every variant's steps, level by level, each step's output from the cache or made; then each
variant judged against its gates and published into ``build/``, with the fallback chain followed."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Artifact, EvaluationReport
from slmdeploy.errors import GateFailed, SlmdeployError, plugin_code
from slmdeploy.execute.cache import Store
from slmdeploy.execute.executors import Executor
from slmdeploy.execute.executors.local import LocalExecutor
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.publish import REPORT, publish
from slmdeploy.execute.records import load_artifact
from slmdeploy.execute.results import Outcome, StepResult, Task, VariantResult
from slmdeploy.execute.runner import StepRunner, locate
from slmdeploy.execute.verdicts import GateResult, evaluation_record, evaluator_failed, gate_error, judge, write_reports
from slmdeploy.host.registry import Registry
from slmdeploy.plan.steps import Plan, Step, Variant

Groups = dict[str, list[tuple["_Position", Step]]]


@attrs.define
class _Position:
    """Where one variant is in the build: the artifact its next step takes, or why it stopped."""

    variant: Variant
    artifact: Artifact
    digest: str
    entry: Path | None = None
    """The cache entry holding `artifact` (None for the source model)."""
    results: list[StepResult] = attrs.field(factory=list)
    error: SlmdeployError | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)
    gates: list[GateResult] | None = None
    """The judged gates, once the variant's evaluators ran."""


class Pipeline:
    """Builds the variants of a plan into the project's cache and ``build/`` folder."""

    def __init__(
        self,
        plan: Plan,
        registry: Registry,
        store: Store,
        reporter: Reporter,
        jobs: int = 1,
        executor: Executor | None = None,
        reports: bool = True,
    ) -> None:
        self.plan = plan
        self.reports = reports
        """Whether `build` lets report plugins write what people read (a search writes them once, at its end)."""
        self.registry = registry
        self.store = store
        self.reporter = reporter
        self.runner = StepRunner(plan, registry, store, reporter)
        self.executor = executor or LocalExecutor(jobs)

    def build(self) -> list[VariantResult]:
        """Run every variant's steps, level by level: a step several variants share runs once, and the
        distinct steps of one level run side by side when `jobs` and free memory allow. A variant that fails
        stops; the others go on and are published."""
        states = [_Position(variant, variant.source, variant.source_digest) for variant in self.plan.variants]
        chain = [next(state for state in states if state.variant.name == name) for name in self.plan.fallback]
        try:
            with self.executor.started(self.store, _inputs(self.plan)):
                waiting = self._build_with_fallback(states, chain)
        finally:
            self.store.remove_stale_tmp()  # what a lost machine left half-written; the lock is held
        self.store.digests.save()
        finished = [self._finish(state) for state in states if id(state) not in waiting]
        self._mark_fallen_back(finished, [state for state in chain if id(state) not in waiting])
        if self.reports and any(result.published for result in finished):
            folders = [result.folder for result in finished if result.folder is not None]
            write_reports(self.registry.manager, [folder for folder in folders if (folder / REPORT).is_file()])
        skipped = [
            VariantResult(state.variant, [], None, False, skipped=True) for state in states if id(state) in waiting
        ]
        return finished + skipped

    def _build_with_fallback(self, states: list[_Position], chain: list[_Position]) -> set[int]:
        """Build every variant but the later ones of the fallback chain; build each of those only when the one
        before it failed its gates. Return the ids of the variants that were not needed."""
        later = {state.variant.name for state in chain[1:]}
        # a runtime adapter's variant waits with its base variant, and is built with it
        waiting = {id(state) for state in states if later & {state.variant.name, state.variant.base}}
        self._build([state for state in states if id(state) not in waiting])
        for previous, following in itertools.pairwise(chain):
            if not isinstance(previous.error, GateFailed):
                break
            self.reporter.say(
                f"{previous.variant.name} failed its gates: building {following.variant.name} instead (fallback)"
            )
            name = following.variant.name
            built = [state for state in states if name in (state.variant.name, state.variant.base)]
            waiting -= {id(state) for state in built}
            self._build(built)
        return waiting

    def _mark_fallen_back(self, finished: list[VariantResult], built_chain: list[_Position]) -> None:
        """Name, in each variant of the chain that failed its gates, the one that passed them instead."""
        passing = next((state.variant.name for state in built_chain if state.error is None), None)
        for result in finished:
            if passing and result.variant.name in self.plan.fallback and isinstance(result.error, GateFailed):
                result.fell_back_to = passing

    def _build(self, states: list[_Position]) -> None:
        for level in range(max(len(state.variant.steps) for state in states)):
            groups = self._group(level, [state for state in states if state.error is None])
            outcomes = self._run_level(groups)
            for key, members in groups.items():
                self._take(outcomes[key], members)

    def _take(self, outcome: Outcome, members: list[tuple[_Position, Step]]) -> None:
        """Give each variant that shares a step its outcome; only the first one counts it as run."""
        for index, (state, step) in enumerate(members):
            if isinstance(outcome, SlmdeployError):
                state.error = locate(self.plan.project, outcome)
            else:
                self._advance(state, attrs.evolve(outcome, step=step, cached=outcome.cached or index > 0))

    def _advance(self, state: _Position, result: StepResult) -> None:
        state.results.append(result)
        if not isinstance(result.artifact, EvaluationReport):
            state.artifact, state.digest = result.artifact, result.entry.output_digest
            state.entry = result.entry.folder
            return
        report = result.artifact
        state.metrics.update(report.summary.get("metrics", {}))
        if not report.passed:
            state.error = evaluator_failed(result.step.plugin_name, result.step.table, report)
        steps = state.variant.steps
        following = steps[len(state.results)] if len(state.results) < len(steps) else None
        if state.error is None and (following is None or following.stage != "evaluate"):
            self._judge(state)

    def _judge(self, state: _Position) -> None:
        """Judge the gates once the variant's last evaluator ran."""
        state.gates = judge(self.plan.gates, state.metrics, self.plan.metrics, adapter=bool(state.variant.adapter))
        state.error = gate_error(self.plan, state.variant.name, state.gates)

    def _group(self, level: int, states: list[_Position]) -> Groups:
        """The steps of one level, by key: variants whose step has the same key share one run."""
        groups: Groups = {}
        for state in states:
            if level < len(state.variant.steps):
                try:
                    step = self.runner.resolve(state.variant.steps[level], state.artifact)
                except SlmdeployError as error:
                    state.error = error
                    continue
                key = self.runner.key(step, state.digest, state.variant)
                groups.setdefault(key, []).append((state, step))
        return groups

    def _run_level(self, groups: Groups) -> dict[str, Outcome]:
        """Run each distinct step of a level once, for the first variant that has it, through the executor."""
        tasks = {key: _task(key, members) for key, members in groups.items()}
        return self.executor.run(tasks, self.runner)

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

    def _withdraw(self, state: _Position) -> None:
        """Undo an earlier build's registration of this very package, which no longer passes its gates."""
        steps = [step for step in state.variant.steps[len(state.results) :] if step.stage == "register"]
        for step in steps:
            entry = self.store.get(self.runner.key(step, state.digest, state.variant))
            if entry is None or step.provided is None:
                continue
            registration = load_artifact(entry, step.provided.cls.OUTPUT)
            with self.store.staging() as staged, plugin_code(f"register plugin {step.plugin_name!r} unregistering"):
                (staged / "scratch").mkdir()
                registrar = self.runner.instantiate(state.variant, step, self.reporter.log, staged / "scratch")
                if registrar.is_current(registration):
                    removed = registrar.unregister(registration)  # type: ignore[attr-defined]
                    self.reporter.say(f"{state.variant.name}: {removed} (it no longer passes its gates)")


def _inputs(plan: Plan) -> list[Path]:
    """The files every machine that runs steps must see: the source model and the adapters."""
    sources = {source for variant in plan.variants for source in (variant.source, variant.reference) if source}
    paths = (path for source in sources for path in (source.path, source.adapter, *source.adapters))
    return sorted({path for path in paths if path is not None})


def _task(key: str, members: list[tuple[_Position, Step]]) -> Task:
    state, step = members[0]
    label = ", ".join(member.variant.name for member, _ in members)
    return Task(key, step, state.variant, state.artifact, state.digest, label, state.entry)
