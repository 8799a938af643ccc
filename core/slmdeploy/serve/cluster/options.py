"""What ``slmdeploy serve --ray`` asks of the cluster, and each model deployment's Ray Serve options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.serve.pool import Limits

FRONT_CPUS = 0.0
"""The front only relays bytes: it takes no CPU a replica could use (it fits on a head node of no CPUs)."""
DRAIN_WAIT_S = 0.5
LOOK_BACK_S = 30.0
"""Ray Serve's default window over which the requests per replica are averaged (``look_back_period_s``)."""
"""How often Ray Serve looks whether a replica it is stopping still holds requests (graceful_shutdown_wait_loop_s)."""


@attrs.frozen
class ClusterOptions:
    """Where to serve and how many replicas of each model: a fixed count, or a range that follows the queue."""

    address: str | None = None
    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    cache_root: Path | None = None
    """The project's cache (``[build] cache_dir``, else ``.slmdeploy``): where replicas find built packages."""
    where: dict[str, str] = attrs.field(factory=dict)
    """Where each setting came from, for errors: ``{"address": "--address"}``."""


def deployment_options(
    limits: Limits, cluster: ClusterOptions, threads: int, memory_bytes: int | None
) -> dict[str, Any]:
    """A model deployment's options: one engine per replica asking for the package's threads as CPUs and its
    measured peak as memory; requests past the engine's rows and queue reach the replica's own 429; a stopping
    replica waits for its running rows (up to the request timeout) before it goes."""
    actor: dict[str, Any] = {"num_cpus": threads}
    if memory_bytes:
        actor["memory"] = memory_bytes
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": limits.max_batch + limits.max_queue + 1,
        "graceful_shutdown_timeout_s": limits.timeout_s,
        "graceful_shutdown_wait_loop_s": DRAIN_WAIT_S,
    }
    if cluster.autoscale is None:
        options["num_replicas"] = cluster.replicas
    else:
        options["autoscaling_config"] = autoscaling(limits, cluster)
    return options


def autoscaling(limits: Limits, cluster: ClusterOptions) -> dict[str, Any]:
    """Ray Serve's ``autoscaling_config``: a replica is added when each holds more requests than its engine decodes
    together (`max_batch`: the rest wait in its queue), removed when they hold fewer."""
    assert cluster.autoscale is not None
    low, high = cluster.autoscale
    return {
        "min_replicas": low,
        "initial_replicas": low,
        "max_replicas": high,
        "target_ongoing_requests": limits.max_batch,
        "upscale_delay_s": cluster.upscale_delay_s,
        "downscale_delay_s": cluster.downscale_delay_s,
        # the queue is averaged over Ray Serve's 30 s, or over the shorter delay asked for: a 1 s delay over a 30 s
        # average would still take most of 30 s to see a change in load
        "look_back_period_s": min(LOOK_BACK_S, cluster.upscale_delay_s, cluster.downscale_delay_s),
    }


def measured_peak_bytes(package: Path) -> int | None:
    """The package's peak resident memory as its evaluation measured it (``report.json`` beside the model folder,
    the benchmark's ``peak_rss_mb``); None when it was not measured."""
    report = package.parent / "report.json"
    try:
        found = _find_key(json.loads(report.read_text(encoding="utf-8")), "peak_rss_mb")
    except (OSError, ValueError):
        return None
    return int(found * 1e6) if isinstance(found, int | float) and found > 0 else None


def _find_key(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None
