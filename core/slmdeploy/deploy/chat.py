"""``slmdeploy run``: a terminal chat with a deployed model, streamed, with tokens/s after each answer."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from slmdeploy.deploy.listing import find
from slmdeploy.deployed import ChatBackend
from slmdeploy.errors import InputError, PluginError, SlmdeployError, brief

EXIT_COMMANDS = ("/exit", "/quit", "/bye")
CLEAR_COMMAND = "/clear"


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
    """Answer `prompt` once, or chat on stdin: a line the model cannot take gets its error, and the chat goes on."""
    if prompt is not None:
        check_text(prompt, "--prompt")
        answer(backend, [{"role": "user", "content": prompt}], max_tokens)
        return
    _tolerate_bad_bytes(sys.stdin)
    click.echo("Type a message; /clear starts a new conversation, /exit or Ctrl-D ends the chat.", err=True)
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo(err=True)
            return
        if line.strip() in EXIT_COMMANDS:
            return
        if line.strip() == CLEAR_COMMAND:
            messages.clear()
            click.echo("(a new conversation)", err=True)
            continue
        if not line.strip():
            continue
        try:
            check_text(line, "this line")
            reply = answer(backend, [*messages, {"role": "user", "content": line}], max_tokens)
        except SlmdeployError as error:
            click.echo(f"error: {error}", err=True)  # this line is dropped; the conversation goes on
            continue
        messages += [{"role": "user", "content": line}, {"role": "assistant", "content": reply}]


def check_text(text: str, what: str) -> None:
    """A prompt must be UTF-8 text with something in it (bytes that are not UTF-8 arrive as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = ord(text[error.start]) & 0xFF
        raise InputError(
            f"{what} is not UTF-8 text (byte 0x{byte:02x} at character {error.start + 1}); it was not sent",
            fix="Type it again as UTF-8 (check the terminal's encoding: locale should name UTF-8).",
        ) from None
    if not text.strip():
        raise InputError(
            f"{what} is empty", fix='Give the text to answer, --prompt "...", or leave --prompt out to chat.'
        )


def _tolerate_bad_bytes(stream: Any) -> None:
    """Read stdin with bad bytes kept as surrogates, so that one bad line is reported instead of ending the chat."""
    if hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="surrogateescape")


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
            f"{backend.runtime} failed while answering: {brief(error)}",
            fix="If the line is ordinary text this is a bug: run again with --debug for the traceback, and report "
            "it to the plugin's authors.",
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
