"""The Ray cluster a build runs on: connecting to it (or starting Ray here), and proving that every node sees the
shared cache and the inputs before any step runs."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.errors import ConfigError, InputError, SlmdeployError

OBJECT_STORE_BYTES = 128 << 20
"""Steps pass only small records through Ray (their files go through the shared cache)."""
PROBE_TIMEOUT_S = 120.0
INSTALL = 'pip install "slmdeploy[ray]"'
LOCAL_PLUGINS_MODULE = "slmdeploy_plugins"


def require_ray() -> None:
    """Fail, saying how to install Ray, when it is not installed (without importing it: see `connect`)."""
    if importlib.util.find_spec("ray") is None:
        raise _not_installed()


def import_ray() -> Any:
    """Ray, or the error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise _not_installed() from None
    return ray


def _not_installed() -> SlmdeployError:
    return SlmdeployError(
        "the ray executor needs Ray, which is not installed in this environment",
        where="[build] executor",
        fix=f"Install it with `{INSTALL}` (on the machine that builds and on every node of the cluster), or "
        'build with the local executor: remove executor = "ray" or pass --executor local.',
    )


@contextlib.contextmanager
def connect(address: str | None, local_cpus: int | None, where: Mapping[str, str]) -> Iterator[None]:
    """Connect to the cluster at `address` (else ``RAY_ADDRESS``), or start a Ray instance here for the build;
    disconnect afterwards. Ray's dashboard and usage statistics stay off; a Ray instance started here listens on
    the loopback address only (Ray's single-machine mode, set before Ray is imported)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():  # the caller connected already (a notebook, a test): use that connection
        yield
        return
    if address is not None:
        _check_answers(address, where.get("address", "RAY_ADDRESS"))
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "namespace": "slmdeploy"}
    try:
        if address is None:  # a single-node instance for this build, reachable from this machine only
            here = {"include_dashboard": False, "object_store_memory": OBJECT_STORE_BYTES}
            ray.init(num_cpus=local_cpus, **here, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _no_cluster(address or "this machine", where.get("address", "RAY_ADDRESS"), reason) from None
    try:
        if LOCAL_PLUGINS_MODULE in sys.modules:  # the project's own plugin file is not installed on the nodes
            ray.cloudpickle.register_pickle_by_value(sys.modules[LOCAL_PLUGINS_MODULE])
        yield
    finally:
        ray.shutdown()


def _check_answers(address: str, where: str) -> None:
    """Fail in seconds, not after Ray's long retries, when nothing listens at ``host:port``."""
    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5.0).close()
    except OSError as error:
        raise _no_cluster(address, where, error.strerror or str(error)) from None


def _no_cluster(address: str, where: str, reason: str) -> ConfigError:
    return ConfigError(
        f"no Ray cluster answers at {address} ({reason})",
        where=where,
        fix="Start one with `ray start --head` and give the address it prints (host:6379), or set no address "
        "(neither --address, [build] address nor RAY_ADDRESS) to start Ray on this machine for the build.",
    )


def node_label(node_id: str, ip: str) -> str:
    """How progress lines and manifests name a node: ``node 3f2a9c1e (10.0.0.5)``."""
    return f"node {node_id[:8]} ({ip})"


def probe_nodes(root: Path, inputs: Sequence[Path], where: str) -> None:
    """Write a marker into the cache folder and have a task on every alive node read it back; refuse to build,
    naming the path and the node, when one cannot see it or an input."""
    import ray

    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = root / f".probe-{token}"
    marker.write_text(token, encoding="utf-8")
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = [(_probe_on(node["NodeID"], marker, inputs), node) for node in nodes]
        for ref, node in refs:
            _judge(ref, node_label(node["NodeID"], node.get("NodeManagerAddress", "?")), token, root, where)
    finally:
        marker.unlink(missing_ok=True)


def _probe_on(node_id: str, marker: Path, inputs: Sequence[Path]) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
    probe = ray.remote(look).options(num_cpus=0, max_retries=0, scheduling_strategy=on_node)
    return probe.remote(str(marker), [str(path) for path in inputs])


def _judge(ref: Any, node: str, token: str, root: Path, where: str) -> None:
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        seen, missing = ray.get(ref, timeout=PROBE_TIMEOUT_S)
    except GetTimeoutError:
        raise ConfigError(
            f"the Ray {node} did not answer the cache check within {PROBE_TIMEOUT_S:g} s",
            fix="Check that the node is healthy (`ray status`), or remove it from the cluster.",
        ) from None
    except RayError as error:
        raise ConfigError(
            f"the Ray {node} could not run slmdeploy's cache check: {str(error).strip().splitlines()[-1]}",
            fix=f"Install slmdeploy and the project's plugins on every node (`{INSTALL}` and the same packages as "
            "here), for example in the nodes' image.",
        ) from None
    if seen != token:
        raise ConfigError(
            f"the Ray {node} cannot see the cache folder {root}: a marker written there is not there on that node",
            where=where,
            fix="Every node must mount one shared file system (NFS, a cloud file share) at this same path: set "
            "[build] cache_dir to a folder on it, or mount it on that node.",
        )
    if missing:
        raise InputError(
            f"the Ray {node} cannot see {missing[0]}, which its steps read",
            fix="Put the source model and adapters on the shared file system (the same path on every node), and "
            "point [source] at them there.",
        )


def look(marker: str, inputs: list[str]) -> tuple[str | None, list[str]]:
    """Run on one node: the marker's content as this node sees it, and the inputs it cannot see."""
    try:
        seen: str | None = Path(marker).read_text(encoding="utf-8")
    except OSError:
        seen = None
    return seen, [path for path in inputs if not Path(path).exists()]
