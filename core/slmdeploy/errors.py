"""The errors slmdeploy reports to its users.

Every error a user can fix derives from `SlmdeployError`. The CLI prints it as one paragraph (what is wrong,
where, how to fix it) with no traceback and exits with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
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


class FileSystemError(SlmdeployError):
    """The disk is full, or a folder cannot be written: said in the user's terms, with the path and the fix."""

    def __init__(
        self, what: str, *, code: int, path: str | None = None, where: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(what, where=where, fix=fix)
        self.code = code
        self.path = path

    @classmethod
    def no_space(cls, folder: Path | str, needed: int | None = None) -> FileSystemError:
        folder = _existing(Path(folder))
        free = shutil.disk_usage(folder).free
        wanted = f"at least {human_size(needed)}" if needed else "space"
        return cls(
            f"no space left on the disk holding {folder} ({human_size(free)} free)",
            code=errno.ENOSPC,
            path=str(folder),
            fix=f"Free {wanted} there (df -h {folder} shows the disk), then run the command again; completed "
            "stages are cached.",
        )


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
        raise filesystem_error(error) or PluginError(f"{what} crashed: {brief(error)}", fix=_BUG_FIX) from error


_BUG_FIX = "This looks like a bug: run again with --debug for the traceback, and report it to the plugin's authors."
_DISK_FULL_TEXT = re.compile(r"No space left on device|\[Errno 28\]|Disk quota exceeded|\[Errno 122\]")
_FILESYSTEM_CODES = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def brief(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a message: never a whole file's content (a decode error's bytes)."""
    text = str(error) if isinstance(error, UnicodeError) else repr(error)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def filesystem_error(error: BaseException, folder: Path | str | None = None) -> FileSystemError | None:
    """What a full disk or an unwritable folder behind `error` (or its causes) means to the user, or None.

    `folder` is where the work was being written, for errors that do not name a file (a write that ran out of
    space)."""
    for cause in _chain(error):
        if isinstance(cause, FileSystemError):
            return cause
        if isinstance(cause, OSError) and cause.errno in _FILESYSTEM_CODES:
            return _from_os_error(cause, folder)
        if folder is not None and _DISK_FULL_TEXT.search(str(cause)):
            return FileSystemError.no_space(folder)
    return None


def mentions_full_disk(text: str) -> bool:
    return bool(_DISK_FULL_TEXT.search(text))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _from_os_error(error: OSError, folder: Path | str | None) -> FileSystemError:
    path = error.filename or folder
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        # A copy names its source too: the full disk is the one, of the paths involved, with the least space.
        candidates = [_existing(Path(p)) for p in (error.filename2, error.filename, folder) if p] or [Path.cwd()]
        return FileSystemError.no_space(min(candidates, key=lambda candidate: shutil.disk_usage(candidate).free))
    if error.errno in (errno.EACCES, errno.EPERM):
        what, fix = "no permission to write there", "Give this user write access to it (ls -ld shows its owner)"
    elif error.errno == errno.EROFS:
        what, fix = "it is on a read-only file system", "Choose a folder on a writable disk"
    elif error.errno == errno.ENOTDIR:
        what, fix = "part of that path is a file, not a folder", "Move that file away"
    else:
        what, fix = "it is a folder where a file is expected", "Move that folder away"
    return FileSystemError(
        f"cannot write {path or 'a file'}: {what} ({error.strerror})",
        code=error.errno or 0,
        path=str(path) if path else None,
        fix=f"{fix}, or point slmdeploy at another folder, then run the command again.",
    )


def _existing(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path
