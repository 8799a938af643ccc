"""``GET /metrics``: Prometheus text from prometheus-client, in a registry of the server's own."""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests by status, tokens in and out, time to first token, request latency, queue depth; by model."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        kw: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter("slmdeploy_requests", "Chat completions answered, by status", ["model", "status"], **kw)
        self.prompt_tokens = Counter("slmdeploy_prompt_tokens", "Prompt tokens read", ["model"], **kw)
        self.completion_tokens = Counter("slmdeploy_completion_tokens", "Tokens generated", ["model"], **kw)
        self.engine_tokens = Counter(
            "slmdeploy_engine_tokens", "Tokens the engine drew, counted as drawn (a cancelled answer adds no more)",
            ["model"], **kw,
        )  # fmt: skip
        self.prompt_tokens_cached = Counter(
            "slmdeploy_prompt_tokens_cached", "Prompt tokens taken from the cache of an earlier prompt, not read",
            ["model"], **kw,
        )  # fmt: skip
        self.ttft = Histogram(
            "slmdeploy_time_to_first_token_seconds", "From request to first token", ["model"],
            buckets=LATENCY_BUCKETS, **kw,
        )  # fmt: skip
        self.latency = Histogram(
            "slmdeploy_request_latency_seconds", "From request to last token", ["model"], buckets=LATENCY_BUCKETS, **kw
        )
        self.queue_depth = Gauge(
            "slmdeploy_queue_depth", "Requests admitted that have not produced a token yet", ["model"], **kw
        )
        self.active = Gauge("slmdeploy_requests_active", "Requests admitted and not yet answered", ["model"], **kw)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
