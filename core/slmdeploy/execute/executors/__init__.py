"""Executors: how the distinct steps of one build level run. The pipeline hands an executor the level's tasks
and the `Steps` that look one up in the cache, run it here, or pack its making as a `Job` for another machine;
it gets back each task's outcome by key.

`LocalExecutor` (in `local`) runs them in threads of this process; `RayExecutor` (in `ray`) runs each step as a
task of a Ray cluster. Both ask a stage what a step needs (`needs`) the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from slmdeploy.execute.cache import Entry, Store
from slmdeploy.execute.jobs import Job
from slmdeploy.execute.progress import Reporter
from slmdeploy.execute.results import Outcome, StepResult, Task
from slmdeploy.files import tree_size
from slmdeploy.stages import Needs


class Steps(Protocol):
    """What an executor may do with a task (`StepRunner` does it)."""

    reporter: Reporter

    def attempt(self, task: Task, submitted: float | None = None) -> Outcome:
        """Look the step up in the cache, else make it here; an error the user can fix is the outcome."""
        ...

    def lookup(self, task: Task) -> StepResult | None:
        """The step's output from the cache when it is there and current (reported as cached), else None."""
        ...

    def job(self, task: Task) -> Job:
        """The making of the step as plain data, to run where the executor sends it."""
        ...

    def made(self, task: Task, entry: Entry) -> StepResult:
        """The result of a job that committed `entry`."""
        ...


class Executor(Protocol):
    def started(self, store: Store, inputs: Sequence[Path]) -> contextlib.AbstractContextManager[None]:
        """Get ready for a build whose steps read `inputs` and write into `store`, and tidy up after it (connect
        to a cluster, check that every machine sees the cache)."""
        ...

    def run(self, tasks: Mapping[str, Task], steps: Steps) -> dict[str, Outcome]:
        """Run every task (they do not depend on each other); return the outcomes by key."""
        ...


@contextlib.contextmanager
def nothing_to_start(store: Store, inputs: Sequence[Path]) -> Iterator[None]:
    yield


def needs(task: Task) -> Needs:
    """What a task's step needs to run, from its stage and the size of its input."""
    assert task.step.provided is not None
    return task.step.provided.cls.needs(task.step.options, tree_size(Path(task.artifact.path)))
