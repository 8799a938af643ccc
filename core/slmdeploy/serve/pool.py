"""The served models and the way a request goes through one: admitted (or 429), rendered, submitted to its engine,
its events awaited under a deadline, cancelled when the client leaves, and counted in the metrics."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import attrs

from slmdeploy.config.serving import ServeTable
from slmdeploy.serve.engine import EngineWorker
from slmdeploy.serve.events import Delta, Event, Failed, Finished, Job, Sampling
from slmdeploy.serve.metrics import Metrics
from slmdeploy.serve.models import LoadedModel
from slmdeploy.serve.schema import ApiError

DEFAULTS = ServeTable()
"""The ``[serve]`` table's defaults: a server made without a project file takes the same limits."""


@attrs.frozen
class Limits:
    max_batch: int = DEFAULTS.max_batch
    """KV rows of the engine: requests decoded together."""
    max_queue: int = DEFAULTS.max_queue
    """Requests that may wait for a batch slot; beyond them, 429."""
    timeout_s: float = DEFAULTS.timeout
    """Longest a request may take, from admission to its last token; then 504, and the engine stops its answer."""
    max_prompt_tokens: int | None = None
    """Longest prompt, in tokens, after the chat template (None: the model's context less one); longer is a 400."""
    default_max_tokens: int = DEFAULTS.default_max_tokens
    """An answer's length when the request names none (never more than the context leaves)."""
    max_tokens_cap: int | None = None
    """The most ``max_tokens`` a request may ask for (None: what the context leaves); more is a 400."""


@attrs.define
class Served:
    """One model behind the API: its engine thread and the requests it holds."""

    loaded: LoadedModel
    worker: EngineWorker
    created: int = attrs.field(factory=lambda: int(time.time()))
    active: int = 0
    recent_s: list[float] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        return self.loaded.spec.name


class Pool:
    """Every served model, by name and alias; admission, deadlines, disconnects and metrics for each request."""

    def __init__(self, loaded: list[LoadedModel], limits: Limits, metrics: Metrics) -> None:
        self.limits, self.metrics = limits, metrics
        self.models = [Served(model, self._worker(model)) for model in loaded]
        self.by_name = {name: served for served in self.models for name in served.loaded.spec.served_names()}
        self.adapters = {
            name: adapter for served in self.models for name, adapter in served.loaded.spec.adapter_names().items()
        }
        """Model names that apply a runtime LoRA adapter (``NAME:ADAPTER``), to the adapter's name."""
        self.closing = False

    def _worker(self, model: LoadedModel) -> EngineWorker:
        name = model.spec.name
        drawn, cached = self.metrics.engine_tokens.labels(name), self.metrics.prompt_tokens_cached.labels(name)
        return EngineWorker(model, self.limits.max_batch, drawn, cached)

    def start(self) -> None:
        for served in self.models:
            served.worker.start()

    def shut_down(self) -> None:
        """Every request in flight ends with a 503 error; new ones are refused."""
        if self.closing:
            return
        self.closing = True
        for served in self.models:
            served.worker.stop("the server is shutting down")

    def join(self, timeout_s: float) -> None:
        for served in self.models:
            served.worker.thread.join(timeout_s)

    def find(self, name: str) -> Served:
        if name not in self.by_name:
            names = ", ".join(name for served in self.models for name in served.loaded.spec.listed_names())
            raise ApiError(
                404, f"the model {name!r} does not exist; served here: {names}", param="model", code="model_not_found"
            )
        return self.by_name[name]

    def admit(self, served: Served) -> None:
        if self.closing:
            raise ApiError(503, "the server is shutting down", type="server_error", code="server_shutting_down")
        if served.active >= self.limits.max_batch + self.limits.max_queue:
            wait = math.ceil(sum(served.recent_s) / len(served.recent_s)) if served.recent_s else 1
            self.metrics.requests.labels(served.name, "429").inc()
            raise ApiError(
                429,
                f"{served.name} has {served.active} requests in hand, its limit; retry in about {wait} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, wait))},
            )
        served.active += 1
        self.metrics.active.labels(served.name).inc()

    def adapter(self, name: str) -> str | None:
        """The runtime LoRA adapter the model name `name` applies (``NAME:ADAPTER``), or None for a base's name."""
        return self.adapters.get(name)

    async def run(
        self, served: Served, ids: list[int], sampling: Sampling, adapter: str | None = None
    ) -> AsyncIterator[Event]:
        """The request's events, ending with `Finished` or `Failed`; the caller has admitted it. Leaving early
        (a client gone, a cancelled task) cancels it in the engine and frees its slot. `adapter`: the runtime LoRA
        adapter applied to its rows."""
        job = Job(ids, sampling, asyncio.get_running_loop(), adapter=adapter)
        clock = _Clock(served, self.metrics)
        if self.closing:  # admitted, but the engine stopped before the response began
            job.events.put_nowait(Failed("the server is shutting down", 503))
        else:
            served.worker.submit(job)
        ended = False  # the engine said so: its row is free already
        try:
            async for event in self._events(job, clock):
                ended = isinstance(event, Finished | Failed) and clock.status != "504"
                yield event
        finally:
            if not ended:  # the client left, or the time ran out: the row frees at the engine's next step
                served.worker.cancel(job)
            clock.stop(served)

    async def _events(self, job: Job, clock: _Clock) -> AsyncIterator[Event]:
        deadline = time.monotonic() + self.limits.timeout_s
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    event = await job.events.get()
            except TimeoutError:
                clock.status = "504"
                yield Failed(f"the request took longer than the server's {self.limits.timeout_s:g} s limit", 504)
                return
            clock.observe(event)
            yield event
            if isinstance(event, Finished | Failed):
                return


class _Clock:
    """A request's timings and outcome, into the metrics."""

    def __init__(self, served: Served, metrics: Metrics) -> None:
        self.name, self.metrics = served.name, metrics
        self.started = time.perf_counter()
        self.first: float | None = None
        self.status = "499"  # the client left before the end, as nginx counts it
        self.usage: Finished | None = None
        metrics.queue_depth.labels(self.name).inc()

    def observe(self, event: Event) -> None:
        if isinstance(event, Delta) and self.first is None:
            self.first = time.perf_counter()
            self.metrics.queue_depth.labels(self.name).dec()
            self.metrics.ttft.labels(self.name).observe(self.first - self.started)
        elif isinstance(event, Finished):
            self.status, self.usage = "200", event
        elif isinstance(event, Failed):
            self.status = str(event.status)

    def stop(self, served: Served) -> None:
        metrics, elapsed = self.metrics, time.perf_counter() - self.started
        if self.first is None:
            metrics.queue_depth.labels(self.name).dec()
        served.active -= 1
        metrics.active.labels(self.name).dec()
        metrics.requests.labels(self.name, self.status).inc()
        metrics.latency.labels(self.name).observe(elapsed)
        if self.usage is not None:
            metrics.prompt_tokens.labels(self.name).inc(self.usage.prompt_tokens)
            metrics.completion_tokens.labels(self.name).inc(self.usage.completion_tokens)
            served.recent_s = [*served.recent_s[-19:], elapsed]
