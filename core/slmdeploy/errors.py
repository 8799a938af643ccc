"""The errors slmdeploy reports to its users.

Every error a user can fix derives from `SlmdeployError`. The CLI prints it as one paragraph (what is wrong,
where, how to fix it) with no traceback and exits with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class SlmdeployError(Exception):
    """A problem the user can fix: bad project file, bad input model, a failed stage, a failed gate."""

    exit_code = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None, details: str = "") -> None:
        super().__init__(what)
        self.what = what.rstrip(".")
        self.where = where
        self.fix = fix
        self.details = details
        """Preformatted lines shown below the paragraph as they are (a table of gates)."""

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}." if self.where else f"{self.what}."
        text = f"{text} {self.fix}" if self.fix else text
        return f"{text}\n{self.details}" if self.details else text


class ConfigError(SlmdeployError):
    """The project file is wrong: syntax, an unknown or missing key, a value of the wrong type."""


class InputError(SlmdeployError):
    """An input the project points at is missing or unusable (model folder, weights, tokenizer)."""


class PluginError(SlmdeployError):
    """A plugin is missing, duplicated, broken, or raised an unexpected exception."""


class StageError(SlmdeployError):
    """A stage plugin failed on its input. Raised by plugins; the pipeline adds the plugin's name."""


class GateFailed(StageError):
    """An evaluation gate was not met: the variant is not deployed."""


class WorkerTimeout(StageError):
    """A worker process did not finish in the time it was given, and was stopped."""


class LockBusy(SlmdeployError):
    """Another slmdeploy process holds the project's lock."""


def where_in(file: Path | str, line: int | None = None, key: str | None = None) -> str:
    """Format a location in a project file: ``slmdeploy.toml:12 [quantize] precision``."""
    text = str(file) if line is None else f"{file}:{line}"
    return f"{text} {key}" if key else text


@contextlib.contextmanager
def plugin_code(what: str) -> Iterator[None]:
    """Run a plugin's code: its `SlmdeployError` passes through; anything else becomes a `PluginError` that says
    what was running (``--debug`` shows the traceback)."""
    try:
        yield
    except SlmdeployError:
        raise
    except Exception as error:
        raise PluginError(
            f"{what} crashed: {error!r}",
            fix="Run again with --debug for the traceback, and report it to the plugin's authors.",
        ) from error
