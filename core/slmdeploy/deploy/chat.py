"""``slmdeploy run``: a terminal chat with a deployed model, streamed, with tokens/s after each answer."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from slmdeploy.deploy.listing import find
from slmdeploy.deployed import ChatBackend
from slmdeploy.errors import PluginError, SlmdeployError

EXIT_COMMANDS = ("/exit", "/quit", "/bye")


def project_threads(project_dir: Path) -> int:
    """``[runtime] threads`` of the project file, resolved for this machine (every core when there is no file)."""
    from slmdeploy.config.project import PROJECT_FILE, load_project
    from slmdeploy.machine import resolve_threads

    file = project_dir / PROJECT_FILE
    return int(load_project(file).core_table("runtime")["threads"]) if file.is_file() else resolve_threads(None)


def open_backend(project_dir: Path, name: str, manager: Any, threads: int) -> ChatBackend:
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.machine import resolve_threads

    model = find(project_dir / BUILD_DIR, name)
    backend: ChatBackend | None = manager.hook.slmdeploy_chat_backend(model=model, threads=resolve_threads(threads))
    if backend is None:
        raise PluginError(
            f"no installed plugin can run {model.name}",
            fix="Install slmdeploy with the [olive] extra (onnxruntime-genai) or Foundry Local's SDK.",
        )
    click.echo(f"{model.name}: running with {backend.runtime}", err=True)
    return backend


def chat_loop(backend: ChatBackend, prompt: str | None, max_tokens: int | None) -> None:
    if prompt is not None:
        answer(backend, [{"role": "user", "content": prompt}], max_tokens)
        return
    click.echo("Type a message; /exit or Ctrl-D ends the chat.", err=True)
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo(err=True)
            return
        if line.strip() in EXIT_COMMANDS:
            return
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": answer(backend, messages, max_tokens)})


def answer(backend: ChatBackend, messages: list[dict[str, str]], max_tokens: int | None) -> str:
    started = time.perf_counter()
    first: float | None = None
    parts = []
    try:
        for text in backend.stream(messages, max_tokens):
            first = first or time.perf_counter()
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    except SlmdeployError:
        raise
    except Exception as error:
        raise PluginError(
            f"{backend.runtime} failed while answering: {error!r}", fix="Run again with --debug for the traceback."
        ) from error
    ended = time.perf_counter()
    sys.stdout.write("\n")
    rate = (len(parts) - 1) / (ended - first) if first and len(parts) > 1 and ended > first else 0.0
    ttft = (first - started) * 1000 if first else 0.0
    click.echo(
        f"[{len(parts)} tokens, {rate:.1f} tokens/s, first token {ttft:.0f} ms, finish: {backend.finish_reason}]",
        err=True,
    )
    return "".join(parts)
