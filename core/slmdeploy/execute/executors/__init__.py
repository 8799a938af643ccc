"""Executors: how the distinct steps of one build level run. The pipeline hands an executor the level's tasks
and the function that runs one (`StepRunner.attempt`), and gets back each task's outcome by key.

`LocalExecutor` (in `local`) runs them in threads of this process. Another way of running them (a distributed
executor, say) is a class with the same `run` method in a module beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from slmdeploy.execute.results import Outcome, Task


class Executor(Protocol):
    def run(self, tasks: Mapping[str, Task], attempt: Callable[[Task], Outcome]) -> dict[str, Outcome]:
        """Run ``attempt(task)`` for every task (they do not depend on each other); return the outcomes by key."""
        ...
