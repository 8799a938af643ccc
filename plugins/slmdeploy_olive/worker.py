"""The convert and quantize work, run in a child process: ``python -m slmdeploy_olive.worker TASK.json``.

A child process keeps the builder's and Olive's console output in a log file, frees the memory of torch
and the exported graphs when it ends, and turns a crash of native code into a stage error instead of the
end of the build. The parent (`run_task`) forwards the worker's progress lines and raises its error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.plugin import ConfigError, InputError, StageContext, StageError

PROGRESS = "slmdeploy-progress: "
ERRORS: dict[str, type[Exception]] = {"InputError": InputError, "ConfigError": ConfigError, "StageError": StageError}
LOG_TAIL = 12


def run_task(kind: str, task: dict[str, Any], context: StageContext) -> dict[str, Any]:
    """Run `kind` ("convert" or "quantize") in a child process; return what it reports.

    The child's output goes to ``<logs_dir>/<kind>-<variant>.log``, kept after the stage ends."""
    scratch, log = context.scratch, context.log
    task_file, result_file = scratch / "task.json", scratch / "result.json"
    context.logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = context.logs_dir / f"{kind}-{context.variant}.log"
    task_file.write_text(json.dumps({"kind": kind, "result": str(result_file), **task}), encoding="utf-8")
    with log_file.open("wb") as output:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OLIVE_DISABLE_TELEMETRY": "1"}
        child = subprocess.Popen(
            [sys.executable, "-m", "slmdeploy_olive.worker", str(task_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        _follow(child, log_file, log)
    if result_file.is_file():
        result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
        if "error" in result:
            error = result["error"]
            what = error["what"] + (":\n" + _tail(log_file) if error.get("crashed") else "")
            fix = f"{error.get('fix') or ''} The full log: {log_file}.".strip()
            raise ERRORS.get(error["kind"], StageError)(what, where=error.get("where"), fix=fix)
        return result
    raise StageError(
        f"the {kind} worker ended with exit code {child.returncode} before finishing; its log ends:\n"
        + _tail(log_file),
        fix=f"The full log: {log_file}.",
    )


def _follow(child: subprocess.Popen[bytes], log_file: Path, log: Callable[[str], None]) -> None:
    position = 0
    try:
        while True:
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
                return
            time.sleep(0.2)
    except BaseException:
        child.kill()
        child.wait()
        raise


def _tail(log_file: Path) -> str:
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(line[-300:] for line in lines[-LOG_TAIL:])


def progress(message: str) -> None:
    print(PROGRESS + message, flush=True)


def main(task_file: Path) -> int:
    task = json.loads(task_file.read_text(encoding="utf-8"))
    result_file = Path(task["result"])
    try:
        if task["kind"] == "convert":
            from slmdeploy_olive.convert import convert_in_worker as work
        else:
            from slmdeploy_olive.quantize import quantize_in_worker as work
        result = work(task, progress)
    except (InputError, ConfigError, StageError) as error:
        result = {"error": {"kind": type(error).__name__, "what": error.what, "where": error.where, "fix": error.fix}}
    except Exception as error:  # noqa: BLE001 - reported to the parent with the traceback in the log
        traceback.print_exc()
        result = {
            "error": {
                "kind": "StageError",
                "what": f"{task['kind']} failed: {error!r}",
                "crashed": True,
                "fix": "The lines above end the worker's log; report them with the options used.",
            }
        }
    result_file.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    status = main(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Olive queues a telemetry heartbeat before it reads OLIVE_DISABLE_TELEMETRY, and its exit handler then
    # waits about 11 s to send it; offline that is 11 s per stage for nothing. The result is already written.
    os._exit(status)
