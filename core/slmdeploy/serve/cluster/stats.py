"""The replicas' health and metrics, gathered for the front: each replica reports every `REPORT_S` and as each of its
answers ends (so the metrics count a request by the time its client has the answer); a replica that stopped
reporting (lost with its node or worker) drops out after `STALE_S`."""

from __future__ import annotations

import time
from typing import Any

REPORT_S = 0.5
STALE_S = 3.0


class ReplicaStats:
    """A small Ray actor: the latest report of each replica, and whether the server is closing."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[float, dict[str, Any]]] = {}
        self.closing = False

    def report(self, replica: str, report: dict[str, Any]) -> bool:
        """Keep `replica`'s report; answer whether the server is closing (then the replica ends its requests)."""
        self.reports[replica] = (time.monotonic(), report)
        return self.closing

    def forget(self, replica: str) -> None:
        self.reports.pop(replica, None)

    def close(self) -> None:
        self.closing = True

    def live(self) -> list[dict[str, Any]]:
        """The reports of the replicas heard from within `STALE_S`, each with its ``replica`` id."""
        now = time.monotonic()
        return [{"replica": key, **report} for key, (at, report) in sorted(self.reports.items()) if now - at < STALE_S]


def start_stats() -> Any:
    """The stats actor, on this node, using no CPU."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(ReplicaStats).options(num_cpus=0, scheduling_strategy=here).remote()


def merged_metrics(reports: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The replicas' Prometheus metrics as one server's: each sample summed over the replicas (counts, sums,
    buckets, gauges), the earliest ``_created``. A replica that is lost takes its counts with it (Prometheus reads
    the drop as a counter reset)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for report in reports:
        for family in text_string_to_metric_families(report["metrics"]):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            summed = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                earliest = sample.name.endswith("_created") and key in summed
                summed[key] = min(summed[key], sample.value) if earliest else summed.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)

    class Collected:
        def collect(self) -> list[Metric]:
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
