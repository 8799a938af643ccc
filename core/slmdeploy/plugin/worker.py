"""Running a stage's heavy work in a child process (``python -m slmdeploy.plugin.worker TASK.json``).

A stage's `run` runs in the build's own process (in a thread when steps run side by side). Work that loads
large models, prints a library's console output, or can crash in native code belongs in a child process:
it keeps the output in a log file, returns the memory of torch and of exported graphs when it ends, and turns a
crash into a `StageError` instead of the end of the build::

    from slmdeploy.plugin.worker import run_in_worker

    def run(self, artifact, output_dir):
        task = {"model": str(artifact.path), "out": str(output_dir)}
        result = run_in_worker("slmdeploy_myquant.work:quantize_in_worker", task, self.context, "quantize")
        ...

    # slmdeploy_myquant/work.py: importable by the child, JSON in, JSON out
    def quantize_in_worker(task, progress):
        progress("quantizing")        # shown under the stage's spinner
        ...
        return {"size": 123}

`run_in_worker` forwards the progress lines to the stage's log, and raises the `SlmdeployError` the function
raised (`ConfigError`, `InputError`, `StageError`), or a `StageError` with the end of its log when it crashed.
The slmdeploy core uses `interrupt_workers` to pass Ctrl-C on to every running child.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slmdeploy.errors import (
    ConfigError,
    FileSystemError,
    InputError,
    SlmdeployError,
    StageError,
    WorkerTimeout,
    brief,
    filesystem_error,
    mentions_full_disk,
)
from slmdeploy.stages import StageContext

__all__ = ["run_in_worker"]

PROGRESS = "slmdeploy-progress: "
ERRORS: dict[str, type[SlmdeployError]] = {"InputError": InputError, "ConfigError": ConfigError}
LOG_TAIL = 12
STOP_TIMEOUT = 60.0
INTERRUPTED = "Interrupted"
_RUNNING: set[subprocess.Popen[bytes]] = set()
_RUNNING_LOCK = threading.Lock()


def run_in_worker(
    function: str,
    task: Mapping[str, Any],
    context: StageContext,
    log_name: str,
    environment: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run `function` on `task` (JSON-friendly) in a child process; return the dict it returned.

    The child's output goes to ``<logs_dir>/<log_name>-<variant>.log``, kept after the stage ends. A child still
    running after `timeout` seconds is stopped and `WorkerTimeout` raised."""
    task_file, result_file = context.scratch / f"{log_name}-task.json", context.scratch / f"{log_name}-result.json"
    context.logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = context.logs_dir / f"{log_name}-{context.variant}.log"
    task_file.write_text(
        json.dumps({"function": function, "result": str(result_file), "task": dict(task)}), encoding="utf-8"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(environment or {})}
    with log_file.open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", "slmdeploy.plugin.worker", str(task_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        with _RUNNING_LOCK:
            _RUNNING.add(child)
        try:
            timed_out = _follow(child, log_file, context.log, None if timeout is None else time.monotonic() + timeout)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(child)
    if timed_out:
        raise WorkerTimeout(
            f"the {log_name} worker did not finish within {timeout:g} s and was stopped",
            fix=f"Its log: {log_file}.",
        )
    result = _read_result(result_file)
    if result is None:
        raise _ended_early(log_name, child.returncode, log_file, context.scratch)
    if "error" in result:
        raise _error(result["error"], log_file, context.scratch)
    return dict(result["value"])


def interrupt_workers() -> None:
    """Interrupt every running worker as Ctrl-C does (for a build interrupted while stages run in threads)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for child in running:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)


def _read_result(result_file: Path) -> dict[str, Any] | None:
    """The worker's result, or None when it wrote none (it was killed, or the disk filled while it wrote)."""
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _ended_early(log_name: str, code: int | None, log_file: Path, scratch: Path) -> BaseException:
    if code in (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT):
        return KeyboardInterrupt(f"the {log_name} worker was interrupted")
    tail = _tail(log_file)
    if mentions_full_disk(tail) or _disk_nearly_full(scratch):
        return FileSystemError.no_space(scratch)
    return StageError(
        f"the {log_name} worker ended with exit code {code} before finishing; its log ends:\n{tail}",
        fix=f"The full log: {log_file}.",
    )


def _error(error: dict[str, Any], log_file: Path, scratch: Path) -> BaseException:
    """The exception a worker's reported error stands for, in the parent."""
    if error["kind"] == INTERRUPTED:
        return KeyboardInterrupt(error["what"])
    if error["kind"] == "FileSystemError" and error.get("code") not in (errno.ENOSPC, errno.EDQUOT):
        return FileSystemError(error["what"], code=error["code"], path=error.get("path"), fix=error.get("fix"))
    if error["kind"] == "FileSystemError" or (error.get("crashed") and mentions_full_disk(_tail(log_file))):
        return FileSystemError.no_space(error.get("path") or scratch)
    log = f"its traceback is in {log_file}" if error.get("crashed") else f"The full log: {log_file}"
    what, fix = error["what"], f"{error.get('fix') or ''} {log[0].upper()}{log[1:]}.".strip()
    return ERRORS.get(error["kind"], StageError)(what, where=error.get("where"), fix=fix)


def _disk_nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _follow(child: subprocess.Popen[bytes], log_file: Path, log: Callable[[str], None], deadline: float | None) -> bool:
    """Forward the child's progress lines until it ends (False) or the deadline passes and it is stopped (True)."""
    position = 0
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                _stop(child, grace=5.0)
                return True
            done = child.poll() is not None
            with log_file.open("rb") as stream:
                stream.seek(position)
                chunk = stream.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            position += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                if line.startswith(PROGRESS):
                    log(line[len(PROGRESS) :])
            if done:
                return False
            time.sleep(0.2)
    except BaseException:
        _stop(child)
        raise


def _stop(child: subprocess.Popen[bytes], grace: float = STOP_TIMEOUT) -> None:
    """Interrupt the worker as Ctrl-C does and give it time to undo what it started; kill it only if it hangs."""
    try:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _tail(log_file: Path) -> str:
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(line[-300:] for line in lines[-LOG_TAIL:])


def progress(message: str) -> None:
    """Report progress from inside a worker function; shown under the stage."""
    print(PROGRESS + message, flush=True)


def main(task_file: Path) -> int:
    spec = json.loads(task_file.read_text(encoding="utf-8"))
    module, _, name = spec["function"].partition(":")
    folder = Path(spec["result"]).parent
    try:
        result: dict[str, Any] = {"value": getattr(importlib.import_module(module), name)(spec["task"], progress)}
    except KeyboardInterrupt:
        result = {"error": {"kind": INTERRUPTED, "what": f"{spec['function']} was interrupted"}}
    except BaseException as error:  # noqa: BLE001 - reported to the parent with the traceback in the log
        result = {"error": _describe(error, spec["function"], folder)}
    _write_result(Path(spec["result"]), result)
    return 0


def _describe(error: BaseException, function: str, folder: Path) -> dict[str, Any]:
    """A worker's error as the parent rebuilds it: a full disk or an unwritable folder in the user's terms first,
    the plugin's own error next, and only an unexpected exception as a crash to report."""
    found = filesystem_error(error, folder)
    if found is not None:
        traceback.print_exc()
        return {"kind": "FileSystemError", "what": found.what, "code": found.code, "path": found.path, "fix": found.fix}
    if isinstance(error, SlmdeployError):
        return {"kind": type(error).__name__, "what": error.what, "where": error.where, "fix": error.fix}
    traceback.print_exc()
    return {
        "kind": "StageError",
        "what": f"{function} crashed: {brief(error)}",
        "crashed": True,
        "fix": "This looks like a bug: report it, with the options used and the worker's log, to the plugin's authors.",
    }


def _write_result(file: Path, result: dict[str, Any]) -> None:
    """Write the result whole or not at all (a full disk must not leave half a file for the parent to misread)."""
    partial = file.with_suffix(".partial")
    try:
        partial.write_text(json.dumps(result), encoding="utf-8")
        partial.replace(file)
    except OSError:
        partial.unlink(missing_ok=True)
        traceback.print_exc()


if __name__ == "__main__":
    status = main(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without running exit handlers: the result is written, and some libraries' handlers wait on the
    # network (Olive's telemetry waits about 11 s offline).
    os._exit(status)
