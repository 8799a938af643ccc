"""Running a level's steps in threads of this process, side by side while memory allows."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from slmdeploy.execute.cache import Store
from slmdeploy.execute.executors import Steps, needs, nothing_to_start
from slmdeploy.execute.results import Outcome, Task
from slmdeploy.plugin.worker import interrupt_workers


class LocalExecutor:
    """Runs at most `jobs` steps at once, and one at a time when a step must run alone (it measures speed or
    memory) or when the memory their stages say they need would not fit in free memory."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)

    def started(self, store: Store, inputs: Sequence[Path]) -> contextlib.AbstractContextManager[None]:
        return nothing_to_start(store, inputs)

    def run(self, tasks: Mapping[str, Task], steps: Steps) -> dict[str, Outcome]:
        parallel = self._parallel(tasks.values())
        if parallel <= 1:
            return {key: steps.attempt(task) for key, task in tasks.items()}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="stage") as pool:
            futures = {key: pool.submit(steps.attempt, task, time.time()) for key, task in tasks.items()}
            try:
                wait(futures.values())
            except BaseException:
                # Ctrl-C reached this thread only (a SIGTERM, or a signal sent to this process): stop the workers
                # the stage threads are waiting on, so that they end as interrupted too.
                interrupt_workers()
                raise
        return {key: future.result() for key, future in futures.items()}

    def _parallel(self, tasks: Collection[Task]) -> int:
        parallel = min(self.jobs, len(tasks))
        if parallel > 1 and not _fits_in_memory(tasks):
            return 1
        if any(task.step.provided is not None and task.step.provided.cls.RUNS_ALONE for task in tasks):
            return 1
        return parallel


def _fits_in_memory(tasks: Collection[Task]) -> bool:
    """Run stages side by side only while the memory they need together fits in free memory."""
    import psutil

    needed = sum(needs(task).memory for task in tasks if task.step.provided is not None)
    return bool(needed < psutil.virtual_memory().available)
