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
    from pathlib import Path

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
@click.option(
    "--ray", "on_ray", is_flag=True, default=None, help="Serve as Ray Serve deployments on a Ray cluster. [serve] ray."
)
@click.option("--address", metavar="ADDR", help="The Ray cluster (host:port; else RAY_ADDRESS, else Ray started here).")
@click.option("--replicas", type=POSITIVE, help="Replicas of each model on the cluster. [serve] replicas.")
@click.option("--autoscale", metavar="MIN:MAX", help="Replicas follow the queue length, MIN to MAX. [serve] autoscale.")
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
    on_ray: bool | None,
    address: str | None,
    replicas: int | None,
    autoscale: str | None,
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
    from slmdeploy.execute.cache import STATE_DIR
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.machine import resolve_threads
    from slmdeploy.serve.models import folder_specs, project_specs
    from slmdeploy.serve.server import ServeOptions
    from slmdeploy.serve.server import serve as run_server

    file = session.project_dir / PROJECT_FILE
    in_project = file.is_file()
    specs = project_specs(session.project_dir / BUILD_DIR, models) if in_project else folder_specs(models)
    project = load_project(file) if in_project else None
    table = project.serve if project is not None else ServeTable()
    request_limits, connections = serve_limits(table, limits, allowed_hosts, cors_origins)
    options = ServeOptions(host, port, resolve_threads(threads), api_key_env, request_limits, connections)
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if on_ray or (on_ray is None and table.ray):
        from slmdeploy.serve.cluster.deploy import serve_on_ray

        cache = None
        if project is not None:
            cache_dir = project.build.cache_dir
            cache = (project.root / cache_dir).resolve() if cache_dir else project.root / STATE_DIR
        serve_on_ray(specs, options, cluster_options(table, address, replicas, autoscale, cache), echo)
    elif address or replicas or autoscale:
        raise click.UsageError("--address, --replicas and --autoscale serve on a Ray cluster: add --ray")
    else:
        run_server(specs, options, echo)


def cluster_options(
    table: ServeTable, address: str | None, replicas: int | None, autoscale: str | None, cache_root: Path | None
) -> Any:
    """Where and how many replicas: the flags over the project's ``[serve]`` table (a flag of either kind replaces
    both of the table's replicas and autoscale)."""
    from slmdeploy.config.serving import replica_range
    from slmdeploy.serve.cluster.options import ClusterOptions

    if replicas is not None and autoscale is not None:
        raise click.UsageError("give --replicas N or --autoscale MIN:MAX, not both")
    if autoscale is not None:
        try:
            scaled: tuple[int, int] | None = replica_range(autoscale)
        except ValueError:
            raise click.BadParameter(
                f"{autoscale!r} is not MIN:MAX with 1 <= MIN <= MAX", param_hint="--autoscale"
            ) from None
    elif replicas is None and table.autoscale is not None:
        scaled = replica_range(table.autoscale)
    else:
        scaled = None
    where = {"address": "--address" if address else "[serve] address"}
    return ClusterOptions(
        address or table.address, replicas or table.replicas, scaled, table.upscale_delay, table.downscale_delay,
        cache_root, where,
    )  # fmt: skip


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
