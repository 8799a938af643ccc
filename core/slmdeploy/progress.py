"""Showing a build's progress: a spinner with elapsed time on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any


class Reporter:
    """Plain-line progress, for logs and pipes. `RichReporter` draws spinners on a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self._variant = ""

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def variant(self, name: str) -> None:
        self._variant = name
        self.say(f"[{name}]")

    def log(self, message: str) -> None:
        self.say(f"    {message}")

    def cached(self, label: str, duration: float) -> None:
        self.say(f"  {label}: cached (made in {duration:.1f}s)")

    @contextlib.contextmanager
    def running(self, label: str) -> Iterator[Callable[[str], None]]:
        self.say(f"  {label}: running")
        started = time.monotonic()
        try:
            yield self.log
        except BaseException as error:
            self.say(f"  {label}: {_ended(error)} after {time.monotonic() - started:.1f}s")
            raise
        self.say(f"  {label}: done in {time.monotonic() - started:.1f}s")


class RichReporter(Reporter):
    """A spinner with the stage's elapsed time and its latest log line; finished stages stay as lines."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        super().__init__(self.console.file)

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    @contextlib.contextmanager
    def running(self, label: str) -> Iterator[Callable[[str], None]]:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns: list[Any] = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[note]}"),
        ]
        started = time.monotonic()
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(f"  {label}", note="")

            def log(message: str) -> None:
                progress.update(task, note=message)
                progress.console.print(f"    {message}", markup=False, highlight=False)

            try:
                yield log
            except BaseException as error:
                progress.stop()
                self.say(f"  {label}: {_ended(error)} after {time.monotonic() - started:.1f}s")
                raise
        self.say(f"  {label}: done in {time.monotonic() - started:.1f}s")


def _ended(error: BaseException) -> str:
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


def make_reporter(plain: bool = False) -> Reporter:
    return Reporter() if plain or not sys.stderr.isatty() else RichReporter()
