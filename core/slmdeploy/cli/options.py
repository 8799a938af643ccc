"""Command-line options that more than one command takes, declared once so that they read alike everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

Command = TypeVar("Command", bound=Callable[..., Any])


def json_option(description: str = "Machine-readable output.") -> Callable[[Command], Command]:
    """``--json``, passed to the command as `as_json`; `description` is its help text."""
    return click.option("--json", "as_json", is_flag=True, help=description)


def _threads_of_project(ctx: click.Context, param: click.Parameter, threads: int | None) -> int:
    """``--threads`` as given, else ``[runtime] threads`` of the project file (every core when there is none)."""
    if threads is not None:
        return threads
    from slmdeploy.cli.session import Session
    from slmdeploy.deploy.chat import project_threads

    return project_threads(ctx.find_object(Session).project_dir)  # type: ignore[union-attr]


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    callback=_threads_of_project,
    help="Intra-op threads (0: every core; default: [runtime] threads of the project file).",
)
"""``--threads``, passed to the command as `threads`: a count, the project's when not given."""
