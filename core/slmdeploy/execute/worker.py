"""Running a stage's heavy work in a child process: ``python -m slmdeploy.execute.worker TASK.json``.

A child process keeps a library's console output in a log file, returns the memory of torch and of exported
graphs when it ends, and turns a crash of native code into a stage error instead of the end of the build.
`run_in_worker` runs ``function(task, progress)`` (named ``"package.module:function"``) there, forwards its
progress lines to the stage's log, and raises the `SlmdeployError` it raised, or a `StageError` with the end
of its log when it crashed.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slmdeploy.errors import ConfigError, InputError, SlmdeployError, StageError, WorkerTimeout
from slmdeploy.stages import StageContext

PROGRESS = "slmdeploy-progress: "
ERRORS: dict[str, type[SlmdeployError]] = {"InputError": InputError, "ConfigError": ConfigError}
LOG_TAIL = 12
STOP_TIMEOUT = 60.0


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
            [sys.executable, "-m", "slmdeploy.execute.worker", str(task_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        timed_out = _follow(child, log_file, context.log, None if timeout is None else time.monotonic() + timeout)
    if timed_out:
        raise WorkerTimeout(
            f"the {log_name} worker did not finish within {timeout:g} s and was stopped",
            fix=f"Its log: {log_file}.",
        )
    if not result_file.is_file():
        raise StageError(
            f"the {log_name} worker ended with exit code {child.returncode} before finishing; its log "
            f"ends:\n{_tail(log_file)}",
            fix=f"The full log: {log_file}.",
        )
    result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    if "error" in result:
        error = result["error"]
        what = error["what"] + (":\n" + _tail(log_file) if error.get("crashed") else "")
        fix = f"{error.get('fix') or ''} The full log: {log_file}.".strip()
        raise ERRORS.get(error["kind"], StageError)(what, where=error.get("where"), fix=fix)
    return dict(result["value"])


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
    try:
        value = getattr(importlib.import_module(module), name)(spec["task"], progress)
        result: dict[str, Any] = {"value": value}
    except SlmdeployError as error:
        result = {"error": {"kind": type(error).__name__, "what": error.what, "where": error.where, "fix": error.fix}}
    except BaseException as error:  # noqa: BLE001 - reported to the parent with the traceback in the log
        traceback.print_exc()
        result = {
            "error": {
                "kind": "StageError",
                "what": f"{spec['function']} failed: {error!r}",
                "crashed": True,
                "fix": "The lines above end the worker's log; report them with the options used.",
            }
        }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    status = main(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without running exit handlers: the result is written, and some libraries' handlers wait on the
    # network (Olive's telemetry waits about 11 s offline).
    os._exit(status)
