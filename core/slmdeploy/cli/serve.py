"""``slmdeploy serve``: the deployed models behind an OpenAI-compatible API (the ``[serve]`` extra)."""

from __future__ import annotations

import importlib.util

import click

from slmdeploy.cli.session import Session
from slmdeploy.errors import PluginError

SERVE_LIBRARIES = (
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "prometheus_client",
    "onnxruntime",
    "onnxruntime_genai",
    "llguidance",
)


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
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=None,
    help="Intra-op threads (0: every core; default: [runtime] threads of the project file).",
)
@click.option(
    "--max-batch", type=click.IntRange(1, 64), default=8, show_default=True, help="KV rows: requests decoded together."
)
@click.option(
    "--max-queue", type=click.IntRange(min=0), default=32, show_default=True, help="Requests that may wait; then 429."
)
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds a request may take."
)
@click.pass_obj
def serve(
    session: Session,
    host: str,
    port: int,
    models: tuple[str, ...],
    api_key_env: str | None,
    threads: int | None,
    max_batch: int,
    max_queue: int,
    timeout: float,
) -> None:
    """Serve the deployed models through an OpenAI-compatible API (/v1/chat/completions) and a chat page (/)."""
    missing = [name for name in SERVE_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        raise PluginError(
            f"slmdeploy serve needs {', '.join(missing)}",
            fix="Install slmdeploy with the [serve] and [olive] extras: pip install 'slmdeploy[serve,olive]'.",
        )
    from slmdeploy.config.project import PROJECT_FILE
    from slmdeploy.deploy.chat import project_threads
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.machine import resolve_threads
    from slmdeploy.serve.models import folder_specs, project_specs
    from slmdeploy.serve.pool import Limits
    from slmdeploy.serve.server import ServeOptions
    from slmdeploy.serve.server import serve as run_server

    in_project = (session.project_dir / PROJECT_FILE).is_file()
    specs = project_specs(session.project_dir / BUILD_DIR, models) if in_project else folder_specs(models)
    threads = project_threads(session.project_dir) if threads is None else threads
    options = ServeOptions(host, port, resolve_threads(threads), api_key_env, Limits(max_batch, max_queue, timeout))
    run_server(specs, options, lambda line: click.echo(line, err=True))
