"""One model's Ray Serve deployment: each replica loads the package from the shared cache (digest checked) and runs
slmdeploy's own engine and FastAPI app on it, one engine per replica; the front calls `ModelReplica.forward`."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from slmdeploy.serve.cluster.bridge import Forwarded, Message, call_app
from slmdeploy.serve.cluster.packages import PlacedPackage, verify
from slmdeploy.serve.cluster.stats import REPORT_S
from slmdeploy.serve.pool import Limits


class ModelReplica:
    """A replica: the package loaded with `threads` threads and the engine's rows, behind the same app as on one
    machine. Ray Serve stops it (scale-down, shutdown) only once its requests have ended: its rows drain."""

    def __init__(self, placed: PlacedPackage, threads: int, limits: Limits, api_key: str | None, stats: Any) -> None:
        from slmdeploy.serve.app import make_app
        from slmdeploy.serve.metrics import Metrics
        from slmdeploy.serve.models import load
        from slmdeploy.serve.pool import Pool

        verify(placed)
        self.pool = Pool([load(placed.spec, threads, limits.max_batch)], limits, Metrics())
        self.pool.start()  # the app's lifespan is not run in process: its engine starts here
        self.app = make_app(self.pool, api_key)
        self.stats, self.name = stats, placed.spec.name
        self.identity = {**_identity(), "model": self.name}
        self.stopped = threading.Event()
        threading.Thread(target=self._report, name="slmdeploy-replica-report", daemon=True).start()

    async def forward(self, request: Forwarded) -> AsyncIterator[list[Message]]:
        """The app's response to `request`, as batches of ASGI messages (the front relays them to its client)."""
        async for batch in call_app(self.app, request):
            if any(message["type"] == "http.response.body" and not message.get("more_body", False)
                   for message in batch):  # fmt: skip
                await self.stats.report.remote(self.identity["replica"], self._state())  # counted before it is sent
            yield batch

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose engine thread has died is replaced."""
        if not self.pool.closing and not self.pool.models[0].worker.thread.is_alive():
            raise RuntimeError(f"the engine of {self.name} has stopped")

    def _report(self) -> None:
        """Tell the stats actor this replica's state every `REPORT_S`; end the requests when the server closes."""
        import ray

        key = self.identity["replica"]
        while True:  # a first report at once: /health counts this replica as soon as it is up
            try:
                closing = ray.get(self.stats.report.remote(key, self._state()), timeout=10)
            except Exception:  # noqa: BLE001 - the driver (and its stats actor) gone: the server is closing
                closing = True
            if closing:
                self.pool.shut_down()
            if self.stopped.wait(REPORT_S):
                return

    def _state(self) -> dict[str, Any]:
        body, _ = self.pool.metrics.render()
        active = self.pool.models[0].active
        return {**self.identity, "active": active, "closing": self.pool.closing, "metrics": body.decode()}

    def __del__(self) -> None:
        """Ray Serve's end of a replica (after its requests drained): stop the engine, drop out of the stats."""
        self.stopped.set()
        self.pool.shut_down()
        with contextlib.suppress(Exception):  # the cluster may be going down with it
            self.stats.forget.remote(self.identity["replica"])


def _identity() -> dict[str, Any]:
    import ray
    from ray import serve

    return {
        "replica": serve.get_replica_context().replica_id.unique_id,
        "node": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
    }


def bind_replica(index: int, placed: PlacedPackage, threads: int, limits: Limits, key: str | None, stats: Any,
                 options: dict[str, Any]) -> Any:  # fmt: skip
    """`placed`'s deployment, bound to its arguments (one per model: ``model-0``, ``model-1``...)."""
    from ray import serve

    deployment = serve.deployment(ModelReplica).options(name=f"model-{index}", **options)
    return deployment.bind(placed, threads, limits, key, stats)
