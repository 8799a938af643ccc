"""Running the server on a Ray cluster: connect (or start Ray here), prove that every node sees the packages, run
the front and one deployment per model as a Ray Serve application behind Ray Serve's HTTP proxy on this machine's
loopback address, and on SIGTERM or Ctrl-C end the requests in flight with an error, then take it all down."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from slmdeploy.errors import ConfigError, PluginError, SlmdeployError
from slmdeploy.execute.executors.raynodes import connect, probe_nodes
from slmdeploy.serve.cluster.options import ClusterOptions, deployment_options, measured_peak_bytes
from slmdeploy.serve.cluster.packages import PlacedPackage, place
from slmdeploy.serve.guard import is_loopback
from slmdeploy.serve.models import ModelSpec
from slmdeploy.serve.server import ServeOptions, api_key

APPLICATION = "slmdeploy"
CLOSE_S = 10.0
"""After SIGTERM: time for the replicas to end their requests with an error before the application is deleted."""


def serve_on_ray(
    specs: Sequence[ModelSpec], options: ServeOptions, cluster: ClusterOptions, echo: Callable[[str], None]
) -> None:
    """Serve `specs` on the cluster until interrupted."""
    if not is_loopback(options.host):
        raise ConfigError(
            f"--host {options.host}: with --ray the server listens on this machine's loopback address only",
            fix="Keep the default 127.0.0.1 and put a reverse proxy (with TLS and a key) in front for other machines.",
        )
    _require_ray_serve()
    key = api_key(options)
    with connect(cluster.address, None, cluster.where):
        placed = [place(spec, cluster.cache_root) for spec in specs]
        _probe(placed)
        with _stats() as stats, _sigterm() as stopped:  # a SIGTERM from here on (even while deploying) stops it
            _check_room(options.threads)
            application = _application(placed, options, cluster, stats, key)
            try:
                _run(application, options, echo)
                echo(f"serving {', '.join(item.spec.title() for item in placed)} on http://{options.host}:"
                     f"{options.port}/v1 through Ray Serve ({_replicas(cluster)} of each)")  # fmt: skip
                while not stopped.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                echo("stopping: ending the requests in flight, removing the deployments")
                _take_down(stats)


def _require_ray_serve() -> None:
    import importlib.util

    if (
        importlib.util.find_spec("ray") is None
        or importlib.util.find_spec("ray.serve") is None
        or (importlib.util.find_spec("aiohttp") is None)
    ):
        raise PluginError(
            "slmdeploy serve --ray needs Ray Serve, which is not installed in this environment",
            fix='Install it with `pip install "slmdeploy[serve,ray-serve]"` here and on every node of the cluster.',
        )


def _probe(placed: Sequence[PlacedPackage]) -> None:
    """Every node must see each package at its path (the probe's marker goes into the cache folder, or the
    package folder given by path)."""
    for item in placed:
        root = item.entry.parent.parent if item.entry is not None else item.spec.folder
        probe_nodes(root, [item.spec.folder], str(root))


@contextlib.contextmanager
def _stats() -> Iterator[Any]:
    import ray

    from slmdeploy.serve.cluster.stats import start_stats

    stats = start_stats()
    try:
        yield stats
    finally:
        with contextlib.suppress(Exception):
            ray.kill(stats)


def _check_room(threads: int) -> None:
    """A replica asking for more CPUs than any node has would wait forever: say so now."""
    import ray

    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0)
    if threads > largest:
        raise ConfigError(
            f"each replica asks for {threads} CPUs (its threads), and no node of the Ray cluster has more than "
            f"{largest:g}",
            fix="Pass --threads N (at most a node's CPUs), or add larger nodes.",
        )


def _application(
    placed: Sequence[PlacedPackage], options: ServeOptions, cluster: ClusterOptions, stats: Any, key: str | None
) -> Any:
    from slmdeploy.serve.cluster.front import bind_front
    from slmdeploy.serve.cluster.replica import bind_replica

    routes = []
    for index, item in enumerate(placed):
        wanted = deployment_options(options.limits, cluster, options.threads, measured_peak_bytes(item.spec.folder))
        bound = bind_replica(index, item, options.threads, options.limits, key, stats, wanted)
        routes.append((item.spec.served_names(), bound))  # adapters too
    connections = options.connections
    guard = {
        "host": options.host, "allowed_hosts": list(connections.allowed_hosts),
        "cors_origins": list(connections.cors_origins), "max_body_bytes": connections.max_body_bytes,
    }  # fmt: skip
    return bind_front(routes, stats, guard, key, connections.max_connections)


def _run(application: Any, options: ServeOptions, echo: Callable[[str], None]) -> None:
    """Start Ray Serve's proxy on this node's loopback address and the application behind it; wait until every
    replica is up. A replica that fails to start (a package this node sees differently) stops the server."""
    from ray import serve

    echo(f"starting Ray Serve on {options.host}:{options.port} ({options.threads} threads per replica)")
    serve.start(
        http_options={"host": options.host, "port": options.port,
                      "keep_alive_timeout_s": options.connections.keep_alive_s},
        proxy_location="HeadOnly",
    )  # fmt: skip
    try:
        serve.run(application, name=APPLICATION, route_prefix="/", blocking=False)
    except RuntimeError as error:
        serve.shutdown()
        raise SlmdeployError(
            f"the deployments did not start: {_reason(str(error))}",
            fix="Read the replica's error above; `ray status` shows the cluster's nodes.",
        ) from None


def _reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "Error:" in line]
    return lines[-1] if lines else (text.strip().splitlines() or ["unknown"])[0]


def _replicas(cluster: ClusterOptions) -> str:
    if cluster.autoscale is None:
        return f"{cluster.replicas} replica{'s' if cluster.replicas != 1 else ''}"
    return f"{cluster.autoscale[0]} to {cluster.autoscale[1]} replicas, by queue length"


@contextlib.contextmanager
def _sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM while inside: the server then stops as on Ctrl-C. Installed before the application is
    deployed, so a SIGTERM that comes as soon as the server answers is not left to Ray's own handler, which exits
    with status 15 and takes nothing down."""
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGTERM, previous)


def _take_down(stats: Any) -> None:
    """Tell the replicas to end their requests (an error chunk, a 503), give them `CLOSE_S`, then remove it all."""
    import time

    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        ray.get(stats.close.remote(), timeout=5)
        time.sleep(min(CLOSE_S, 2.0))
    with contextlib.suppress(Exception):
        serve.delete(APPLICATION)
    with contextlib.suppress(Exception):
        serve.shutdown()
