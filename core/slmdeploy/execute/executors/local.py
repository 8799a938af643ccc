"""Running a level's steps in threads of this process, side by side while memory allows."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from slmdeploy.artifacts import Artifact
from slmdeploy.execute.results import Outcome, Task
from slmdeploy.execute.worker import interrupt_workers


class LocalExecutor:
    """Runs at most `jobs` steps at once, and one at a time when a step must run alone (it measures speed or
    memory) or when their inputs would not fit in free memory."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)

    def run(self, tasks: Mapping[str, Task], attempt: Callable[[Task], Outcome]) -> dict[str, Outcome]:
        parallel = self._parallel(tasks.values())
        if parallel <= 1:
            return {key: attempt(task) for key, task in tasks.items()}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="stage") as pool:
            futures = {key: pool.submit(attempt, task) for key, task in tasks.items()}
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
        if parallel > 1 and not _fits_in_memory(task.artifact for task in tasks):
            return 1
        if any(task.step.provided is not None and task.step.provided.cls.RUNS_ALONE for task in tasks):
            return 1
        return parallel


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
