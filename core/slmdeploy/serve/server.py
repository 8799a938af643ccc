"""Running the server: the address and key checks, loading the models, uvicorn, and a shutdown that tells the
requests in flight (an error chunk or a 503) before the process exits."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from slmdeploy.errors import ConfigError
from slmdeploy.serve.guard import Guard, HostPolicy, header_timeout_protocol, is_loopback, with_cors
from slmdeploy.serve.models import ModelSpec, load
from slmdeploy.serve.pool import DEFAULTS, Limits, Pool


@attrs.frozen
class ConnectionLimits:
    """What one connection may send and hold, and who may connect (browsers: `allowed_hosts`, `cors_origins`)."""

    max_body_bytes: int = DEFAULTS.max_body_bytes
    max_connections: int = DEFAULTS.max_connections
    header_timeout_s: float = DEFAULTS.header_timeout
    keep_alive_s: float = DEFAULTS.keep_alive_timeout
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()


@attrs.frozen
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0
    api_key_env: str | None = None
    limits: Limits = Limits()
    connections: ConnectionLimits = ConnectionLimits()


def api_key(options: ServeOptions) -> str | None:
    """The key clients must send, read from the environment variable the user named; a non-loopback address
    without one is refused."""
    key = os.environ.get(options.api_key_env) if options.api_key_env else None
    if options.api_key_env and not key:
        raise ConfigError(
            f"--api-key-env names {options.api_key_env}, which is not set or empty",
            fix=f"Export {options.api_key_env}=<a long random key> and start again.",
        )
    if key is None and not is_loopback(options.host):
        raise ConfigError(
            f"--host {options.host} would let other machines use the models with no key",
            fix="Keep the default 127.0.0.1, or pass --api-key-env VAR with the key in $VAR "
            "(clients then send Authorization: Bearer <key>).",
        )
    return key


def serve(specs: Sequence[ModelSpec], options: ServeOptions, echo: Callable[[str], None]) -> None:
    """Load `specs` and answer on the options' address until interrupted."""
    import uvicorn

    from slmdeploy.serve.app import make_app
    from slmdeploy.serve.metrics import Metrics

    key = api_key(options)
    loaded = []
    for spec in specs:
        echo(f"loading {spec.name} from {spec.folder} ({options.threads} threads)")
        loaded.append(load(spec, options.threads, options.limits.max_batch))
    pool = Pool(loaded, options.limits, Metrics())
    limits = options.connections
    app = Guard(
        with_cors(make_app(pool, key), limits.cors_origins),
        HostPolicy(options.host, limits.allowed_hosts),
        limits.max_body_bytes,
    )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="info",
        timeout_graceful_shutdown=15,
        http=header_timeout_protocol(limits.header_timeout_s),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type] # a float works: it is call_later's
    )
    echo(
        f"serving {', '.join(spec.title() for spec in specs)} on http://{options.host}:{options.port}/v1 (chat page: /)"
    )
    _Server(config, pool).run()


class _Server:
    """uvicorn's server, telling the pool first when asked to exit, so requests in flight end with an error."""

    def __init__(self, config: Any, pool: Pool) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                pool.shut_down()
                super().handle_exit(sig, frame)

        self.server = Server(config)
        self.pool = pool

    def run(self) -> None:
        """Serve until a signal; a stop asked for by SIGINT or SIGTERM is a clean exit (uvicorn hands the signal on
        to the previous handler once it has shut down, which would turn it into an interruption)."""
        try:
            self.server.run()
        except KeyboardInterrupt:
            if not self.pool.closing:
                raise
