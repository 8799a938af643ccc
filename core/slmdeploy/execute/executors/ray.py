"""Running a level's steps as tasks of a Ray cluster (``[build] executor = "ray"``, ``pip install "slmdeploy[ray]"``).

This process stays the driver: it holds the project lock, looks each step up in the cache, and alone writes
manifests and ``build/``. A step that must run becomes one Ray task (`_make`) asking for what its stage says it
needs (CPUs, memory, a GPU); the task checks its input's digest, makes the output in a staging folder of the
shared cache and renames it into place, as a local build does. As Ray Train does with checkpoints, the cache must
be on a file system every node mounts at the same path: `started` proves it with a probe task on every node.

Faults follow Ray's own rules: a task whose node or worker process is lost is retried elsewhere, up to
`max_retries` times (Ray's ``max_retries``); a step that fails on its own returns its error as a value, so it
is never retried (``retry_exceptions=False``) and is reported as in a local build. Ctrl-C cancels the tasks.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.errors import SlmdeployError, StageError
from slmdeploy.execute.cache import Entry, Store
from slmdeploy.execute.executors import Steps, needs
from slmdeploy.execute.executors.raynodes import connect, node_label, probe_nodes
from slmdeploy.execute.jobs import Job
from slmdeploy.execute.results import Outcome, Task

THREAD_VARIABLES = ("OMP_NUM_THREADS",)
"""Ray sets OMP_NUM_THREADS to a task's CPU count; a step's bytes can depend on its thread count (float sums in
a LoRA merge), so a task runs with the driver's setting, as the same step run locally would."""
MAX_RETRIES = 3
"""Times a step is run again after its node or worker process was lost (Ray's default for tasks)."""
POLL_S = 0.2
CANCEL_GRACE_S = 30.0


class RayExecutor:
    """Runs each step that is not cached as a Ray task; at most as many at once as the cluster has room for."""

    def __init__(
        self,
        address: str | None = None,
        *,
        local_cpus: int | None = None,
        where: Mapping[str, str] | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.address = address
        self.local_cpus = local_cpus
        """CPUs of the Ray instance started for the build when there is no cluster to connect to."""
        self.where = dict(where or {})
        """Where the settings came from, for errors: ``{"address": "--address", "cache_dir": "slmdeploy.toml:9"}``."""
        self.max_retries = max_retries
        self._events: Any = None
        self._capacity: dict[str, float] = {}

    @contextlib.contextmanager
    def started(self, store: Store, inputs: Sequence[Path]) -> Iterator[None]:
        """Connect (or start Ray here), check that every node sees the cache and the inputs, and disconnect
        afterwards."""
        with connect(self.address, self.local_cpus, self.where):
            import ray

            probe_nodes(store.root, inputs, self.where.get("cache_dir", str(store.root)))
            self._capacity = _largest_node()
            self._events = _event_sink()
            try:
                yield
            finally:
                ray.kill(self._events)
                self._events = None

    def run(self, tasks: Mapping[str, Task], steps: Steps) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        waiting = {}
        for key, task in tasks.items():
            try:
                found = steps.lookup(task)
            except SlmdeployError as error:
                outcomes[key] = error
                continue
            if found is not None:
                outcomes[key] = found
            else:
                waiting[key] = task
        alone = any(task.step.provided is not None and task.step.provided.cls.RUNS_ALONE for task in waiting.values())
        batches = [[key] for key in waiting] if alone else [list(waiting)]
        for batch in batches:
            outcomes.update(_Level(self, steps, {key: waiting[key] for key in batch}).run())
        return outcomes

    def submit(self, task: Task, job: Job) -> Any:
        """Start `job` as a Ray task with the resources its stage asks for; return its object reference."""
        wanted = needs(task)
        if wanted.gpus > self._capacity.get("GPU", 0.0):
            raise StageError(
                f"{task.step.table} ({task.step.plugin_name}) needs {wanted.gpus:g} GPU, and no node of the Ray "
                "cluster has one",
                fix="Add a node with a GPU to the cluster, or choose options that build on CPUs.",
            )
        options = {
            "num_cpus": min(wanted.cpus, self._capacity.get("CPU", 1.0)),
            "num_gpus": wanted.gpus,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
            "name": f"slmdeploy {task.label}: {task.step.table}",
        }
        memory = min(wanted.memory, int(self._capacity.get("memory", 0)))  # more than any node has would never start
        if memory > 0:
            options["memory"] = memory
        environment = {name: os.environ.get(name) for name in THREAD_VARIABLES}
        return _remote_make().options(**options).remote(job, self._events, time.time(), environment)


class _Level:
    """The tasks of one level on the cluster: submitted together, followed until each ends, with progress."""

    def __init__(self, executor: RayExecutor, steps: Steps, tasks: Mapping[str, Task]) -> None:
        self.executor, self.steps, self.tasks = executor, steps, tasks
        self.running: dict[str, contextlib.ExitStack] = {}
        self.logs: dict[str, Any] = {}
        self.started: dict[str, int] = {}

    def run(self) -> dict[str, Outcome]:
        import ray

        outcomes: dict[str, Outcome] = {}
        refs: dict[Any, str] = {}
        for key, task in self.tasks.items():
            try:
                refs[self.executor.submit(task, self.steps.job(task))] = key
            except SlmdeployError as error:
                outcomes[key] = error
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                self._show(ray.get(self.executor._events.drain.remote()))
                for ref in done:
                    key = refs.pop(ref)
                    outcomes[key] = self._outcome(key, ref)
        except BaseException as error:
            _cancel(list(refs))
            for stack in self.running.values():
                stack.__exit__(type(error), error, error.__traceback__)
            raise
        return outcomes

    def _show(self, events: list[tuple[str, str, str]]) -> None:
        """Progress as in a local build: a step's start (with its node, again after a lost node) and its log."""
        for key, kind, text in events:
            task = self.tasks[key]
            if kind == "log" and key in self.logs:
                self.logs[key](text)
            elif kind == "start" and key in self.running:
                self.started[key] += 1
                self.steps.reporter.say(f"  {_label(task)}: its node was lost; running again on {text}")
            elif kind == "start":
                stack = contextlib.ExitStack()
                self.logs[key] = stack.enter_context(self.steps.reporter.running(f"{_label(task)} on {text}"))
                self.running[key], self.started[key] = stack, 1

    def _outcome(self, key: str, ref: Any) -> Outcome:
        import ray
        from ray.exceptions import RayError, RayTaskError

        self._show(ray.get(self.executor._events.drain.remote()))
        task, stack = self.tasks[key], self.running.pop(key, None)
        try:
            value = ray.get(ref)
        except RayTaskError as error:  # a bug in slmdeploy or a plugin: it propagates, as in a local build
            raise error.as_instanceof_cause() from None
        except RayError as error:
            value = StageError(
                f"{_label(task)}: its Ray task was lost {self.executor.max_retries + 1} times ({type(error).__name__})",
                fix="Nodes kept leaving the cluster while it ran; check the cluster's health and build again.",
            )
        if stack is not None:
            failure = value if isinstance(value, SlmdeployError) else None
            stack.__exit__(type(failure) if failure else None, failure, None)
        if isinstance(value, SlmdeployError):
            return value
        assert isinstance(value, Entry)
        return self.steps.made(task, value)


def _label(task: Task) -> str:
    return f"{task.label}: {task.step.table} ({task.step.plugin_name})"


def _cancel(refs: list[Any]) -> None:
    """Ctrl-C: stop the cluster's tasks as a Ctrl-C stops a local step (KeyboardInterrupt in the task, which
    stops its worker process and removes its staging folder), and wait a little for them to unwind."""
    import ray

    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False, recursive=True)
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)


def _largest_node() -> dict[str, float]:
    """The most CPUs, GPUs and memory one alive node offers: a task asking for more would wait forever."""
    import ray

    largest: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for name in ("CPU", "GPU", "memory"):
                largest[name] = max(largest.get(name, 0.0), float(node.get("Resources", {}).get(name, 0.0)))
    return largest


class _Events:
    """A small actor on the driver's node that tasks tell what they do; the driver drains it as it waits."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def put(self, key: str, kind: str, text: str) -> None:
        self.events.append((key, kind, text))

    def drain(self) -> list[tuple[str, str, str]]:
        events, self.events = self.events, []
        return events


def _event_sink() -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(_Events).options(num_cpus=0, scheduling_strategy=here).remote()


def make_job(job: Job, events: Any, submitted: float, environment: Mapping[str, str | None]) -> Entry | SlmdeployError:
    """The Ray task: check the input, make the step's output into the shared cache; the error as a value."""
    import ray

    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    context = ray.get_runtime_context()
    node = node_label(context.get_node_id(), ray.util.get_node_ip_address())
    ray.get(events.put.remote(job.key, "start", node))
    try:
        job.verify_input()
        return job.make(job.store(), lambda message: events.put.remote(job.key, "log", message), node, submitted)
    except SlmdeployError as error:
        return error
    finally:  # the actor runs one caller's calls in order: once this returns, every log line is there
        ray.get(events.put.remote(job.key, "end", ""))


_REMOTE: dict[str, Any] = {}


def _remote_make() -> Any:
    import ray

    if "make" not in _REMOTE:
        _REMOTE["make"] = ray.remote(make_job)
    return _REMOTE["make"]
