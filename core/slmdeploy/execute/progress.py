"""Showing a build's progress: spinners with elapsed time on a terminal, plain lines otherwise.

Stages of one level may run side by side, so every method may be called from several threads.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any


class Reporter:
    """Plain-line progress, for logs and pipes. `RichReporter` draws spinners on a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def log(self, message: str) -> None:
        self.say(f"    {message}")

    def cached(self, label: str, duration: float) -> None:
        self.say(f"  {label}: cached (made in {duration:.1f}s)")

    @contextlib.contextmanager
    def running(self, label: str) -> Iterator[Callable[[str], None]]:
        self.say(f"  {label}: running")
        started = time.monotonic()
        try:
            yield lambda message: self.log(f"{label}: {message}")
        except BaseException as error:
            self.say(f"  {label}: {_ended(error)} after {time.monotonic() - started:.1f}s")
            raise
        self.say(f"  {label}: done in {time.monotonic() - started:.1f}s")


class RichReporter(Reporter):
    """One spinner per running stage, with its elapsed time and latest log line; finished stages stay as lines."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        super().__init__(self.console.file)
        self._progress: Any = None
        self._running = 0

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    @contextlib.contextmanager
    def running(self, label: str) -> Iterator[Callable[[str], None]]:
        progress = self._start()
        task = progress.add_task(f"  {label}", note="")
        started = time.monotonic()

        def log(message: str) -> None:
            progress.update(task, note=message)
            self.say(f"    {label}: {message}")

        try:
            yield log
        except BaseException as error:
            self._finish(task, f"  {label}: {_ended(error)} after {time.monotonic() - started:.1f}s")
            raise
        self._finish(task, f"  {label}: done in {time.monotonic() - started:.1f}s")

    def _start(self) -> Any:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with self._lock:
            if self._progress is None:
                columns = (
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    TextColumn("[dim]{task.fields[note]}"),
                )
                self._progress = Progress(*columns, console=self.console, transient=True)
                self._progress.start()
            self._running += 1
            return self._progress

    def _finish(self, task: Any, line: str) -> None:
        with self._lock:
            self._progress.remove_task(task)
            self._running -= 1
            if self._running == 0:
                self._progress.stop()
                self._progress = None
        self.say(line)


def _ended(error: BaseException) -> str:
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


def make_reporter(plain: bool = False) -> Reporter:
    return Reporter() if plain or not sys.stderr.isatty() else RichReporter()
