"""Starting `slmdeploy serve` for a test: a child process on a free loopback port, stopped when the test ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

STARTUP_S = 90
TINY_CONTEXT = 32768  # tokens: an answer can run long enough to be caught mid-way
SHUTDOWN_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``python -m slmdeploy -C PROJECT serve --port N ARGS`` and its base URL."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "serve", "--port", str(self.port), *args]
        self.log = project / f"serve-{self.port}.log" if os.access(project, os.W_OK) else None
        out = self.log.open("w") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"slmdeploy serve exited with {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"slmdeploy serve did not answer /health in {STARTUP_S} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.is_file() else ""

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code (killed after SHUTDOWN_S: a failure)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SHUTDOWN_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                pytest.fail(f"slmdeploy serve did not stop within {SHUTDOWN_S} s of SIGTERM")
        return self.process.returncode


def client(server: ServerProcess, key: str = "none") -> object:
    """The real openai client on `server`, without retries (a retried 429 would hide the 429)."""
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def tiny_project(folder: Path, context: int) -> Path:
    """A project in `folder` with one deployed int4 variant of a tiny random-weight Llama whose context is `context`
    tokens (no evaluation: deployable, as `slmdeploy ls` shows it)."""
    from slmdeploy.testing import run_slmdeploy
    from slmdeploy.testing.models import make_tiny_model

    model = make_tiny_model(folder / "source", max_position_embeddings=context)
    project = folder / "project"
    project.mkdir()
    (project / "slmdeploy.toml").write_text(
        f'[project]\nname = "tiny"\n[source]\npath = "{model}"\n[convert]\nplugin = "olive"\n'
        '[quantize]\nplugin = "olive"\nprecision = "int4"\n[template]\nfamily = "auto"\n'
        f"[generation]\nmax_length = {context}\n"
    )
    result = run_slmdeploy(project, "build")
    assert result.returncode == 0, result.stderr
    return project
