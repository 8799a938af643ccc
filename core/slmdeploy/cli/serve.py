"""``slmdeploy serve``: the deployed models behind an OpenAI-compatible API (the ``[serve]`` extra). Every limit's
default comes from the project file's ``[serve]`` table (`slmdeploy.config.serving`), and a flag overrides it."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import click

from slmdeploy.cli.options import threads_option
from slmdeploy.cli.session import Session
from slmdeploy.errors import PluginError

if TYPE_CHECKING:
    from slmdeploy.config.serving import ServeTable
    from slmdeploy.serve.pool import Limits
    from slmdeploy.serve.server import ConnectionLimits

SERVE_LIBRARIES = (
    "fastapi", "uvicorn", "sse_starlette", "prometheus_client", "onnxruntime", "onnxruntime_genai", "llguidance",
)  # fmt: skip
POSITIVE = click.IntRange(min=1)
SECONDS = click.FloatRange(min=0, min_open=True)
# flag -> ([serve] key it overrides, click type, help); every one defaults to the project's [serve] value
LIMIT_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--max-batch": ("max_batch", click.IntRange(1, 64), "KV rows: requests decoded together."),
    "--max-queue": ("max_queue", click.IntRange(min=0), "Requests that may wait for a row; then 429."),
    "--timeout": ("timeout", SECONDS, "Seconds a request may take; then 504, and its answer stops."),
    "--max-body-bytes": ("max_body_bytes", POSITIVE, "Largest request body; larger is a 413."),
    "--max-prompt-tokens": ("max_prompt_tokens", POSITIVE, "Longest prompt in tokens (default: the context)."),
    "--default-max-tokens": ("default_max_tokens", POSITIVE, "Answer length when a request names no max_tokens."),
    "--max-tokens-cap": ("max_tokens_cap", POSITIVE, "The most max_tokens a request may ask for."),
    "--max-connections": ("max_connections", POSITIVE, "Open connections at once; then 503."),
    "--header-timeout": ("header_timeout", SECONDS, "Seconds a connection may take to send its request's headers."),
    "--keep-alive-timeout": ("keep_alive_timeout", SECONDS, "Seconds an idle connection is kept between requests."),
}
LIMIT_KEYS = tuple(key for key, _, _ in LIMIT_FLAGS.values())


def _limit_options(command: Any) -> Any:
    for flag, (key, kind, help_text) in reversed(LIMIT_FLAGS.items()):
        command = click.option(flag, key, type=kind, default=None, help=f"{help_text} [serve] {key}.")(command)
    return command


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME|PATH",
    help="Serve only this deployed model (name or variant), or a package folder; repeatable. Default: every "
    "deployed model that passed its gates.",
)
@click.option("--api-key-env", metavar="VAR", help="Require `Authorization: Bearer $VAR` on the API.")
@threads_option
@click.option(
    "--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
    help="Another name the Host header may carry (the bound address's own names always may); repeatable.",
)  # fmt: skip
@click.option(
    "--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
    help="A web origin (https://app.example) whose pages may call the API from a browser; repeatable. None: CORS off.",
)  # fmt: skip
@_limit_options
@click.pass_obj
def serve(
    session: Session,
    /,
    host: str,
    port: int,
    models: tuple[str, ...],
    api_key_env: str | None,
    threads: int,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    **limits: Any,
) -> None:
    """Serve the deployed models through an OpenAI-compatible API (/v1/chat/completions) and a chat page (/)."""
    missing = [name for name in SERVE_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        raise PluginError(
            f"slmdeploy serve needs {', '.join(missing)}",
            fix="Install slmdeploy with the [serve] and [olive] extras: pip install 'slmdeploy[serve,olive]'.",
        )
    from slmdeploy.config.project import PROJECT_FILE, load_project
    from slmdeploy.config.serving import ServeTable
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.machine import resolve_threads
    from slmdeploy.serve.models import folder_specs, project_specs
    from slmdeploy.serve.server import ServeOptions
    from slmdeploy.serve.server import serve as run_server

    file = session.project_dir / PROJECT_FILE
    in_project = file.is_file()
    specs = project_specs(session.project_dir / BUILD_DIR, models) if in_project else folder_specs(models)
    table = load_project(file).serve if in_project else ServeTable()
    request_limits, connections = serve_limits(table, limits, allowed_hosts, cors_origins)
    options = ServeOptions(host, port, resolve_threads(threads), api_key_env, request_limits, connections)
    run_server(specs, options, lambda line: click.echo(line, err=True))


def serve_limits(
    table: ServeTable, flags: dict[str, Any], hosts: tuple[str, ...], origins: tuple[str, ...]
) -> tuple[Limits, ConnectionLimits]:
    """The project's ``[serve]`` table with the flags given on the command line over it."""
    from slmdeploy.serve.pool import Limits
    from slmdeploy.serve.server import ConnectionLimits

    value = {key: getattr(table, key) if flags.get(key) is None else flags[key] for key in LIMIT_KEYS}
    limits = Limits(
        value["max_batch"], value["max_queue"], value["timeout"], value["max_prompt_tokens"],
        value["default_max_tokens"], value["max_tokens_cap"],
    )  # fmt: skip
    connections = ConnectionLimits(
        value["max_body_bytes"], value["max_connections"], value["header_timeout"], value["keep_alive_timeout"],
        (*table.allowed_hosts, *hosts), (*table.cors_origins, *origins),
    )  # fmt: skip
    return limits, connections
