"""The ingress deployment: Ray Serve's HTTP proxy hands it every request. It keeps browsers and hostile clients out
as the single-machine server does (`slmdeploy.serve.guard`: Host, content type, body limit; CORS when asked), sends a
request to its model's replicas through Ray Serve's router, and relays the answer as it comes.

A replica lost before it answered is retried on another (nothing was sent yet); one lost mid-answer ends a stream
with an error chunk, in OpenAI's shape, as the single-machine server ends a stream it cannot finish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from slmdeploy.serve.cluster.bridge import Forwarded, Message
from slmdeploy.serve.schema import ApiError

ATTEMPTS = 3
RETRY_WAIT_S = 0.5
"""Between attempts: time for Ray Serve's router to learn that a replica is gone."""
HEAD_NODE_RESOURCE = "node:__internal_head__"
"""The resource Ray gives the head node only (``ray._common.constants.HEAD_NODE_RESOURCE_NAME``)."""
LOST = "the replica answering this request was lost; retry the request (another replica answers it)"


class Front:
    """Routes by the body's ``model`` (name or alias) to that model's deployment; aggregates health and metrics."""

    def __init__(
        self, routes: Sequence[tuple[Sequence[str], Any]], stats: Any, guard: dict[str, Any], api_key: str | None
    ) -> None:
        self.handles = {name: handle for names, handle in routes for name in names}
        self.deployments = [(names[0], handle) for names, handle in routes]
        self.stats, self.guard, self.api_key = stats, guard, api_key

    def __serve_build_asgi_app__(self) -> Any:
        """The front's app, made in the replica: Starlette's routing inside slmdeploy's guard."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        from slmdeploy.serve.guard import Guard, HostPolicy, with_cors

        methods = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[
            Route("/health", self.health), Route("/metrics", self.metrics), Route("/v1/models", self.models),
            Route("/{path:path}", self.relay, methods=methods),
        ])  # fmt: skip
        hosts = HostPolicy(self.guard["host"], tuple(self.guard["allowed_hosts"]))
        return Guard(with_cors(app, self.guard["cors_origins"]), hosts, self.guard["max_body_bytes"])

    async def relay(self, request: Any) -> Any:
        body = await request.body()
        handle = self._route(request.method, body)
        if isinstance(handle, ApiError):
            return _error(handle)
        return await self._relayed(handle, Forwarded.of(request.scope, body))

    def _route(self, method: str, body: bytes) -> Any:
        """The deployment of the body's model; the first's for what is not a request for a known model (its app
        answers the error exactly as on one machine), or a 404 naming every model when there are several."""
        first = self.deployments[0][1]
        try:
            name = json.loads(body).get("model") if method == "POST" else None
        except (ValueError, AttributeError):
            return first
        if not isinstance(name, str) or name in self.handles or len(self.deployments) == 1:
            return self.handles.get(name, first) if isinstance(name, str) else first
        names = ", ".join(served for served, _ in self.deployments)
        return ApiError(
            404, f"the model {name!r} does not exist; served here: {names}", param="model", code="model_not_found"
        )

    async def _relayed(self, handle: Any, request: Forwarded) -> Any:
        from starlette.responses import StreamingResponse

        for attempt in range(ATTEMPTS):
            answer = handle.options(stream=True).forward.remote(request)
            try:
                first = await answer.__anext__()
                break
            except Exception as error:  # noqa: BLE001 - a lost or unreachable replica, in Ray's many kinds
                answer.cancel()
                if attempt + 1 == ATTEMPTS:
                    return _error(ApiError(503, f"no replica could answer: {type(error).__name__}", type="server_error",
                                           code="replica_unavailable"))  # fmt: skip
                await asyncio.sleep(RETRY_WAIT_S)
        start, *rest = first
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in start["headers"]}
        streamed = headers.get("content-type", "").startswith("text/event-stream")
        return StreamingResponse(_body(rest, answer, streamed), status_code=start["status"], headers=headers)

    async def health(self, request: Any) -> Any:
        """Up when every model has a replica reporting; which models and replicas, to a client that may use them."""
        from starlette.responses import JSONResponse

        from slmdeploy.serve.app import has_key

        reports = await self.stats.live.remote()
        names = [name for name, _ in self.deployments]
        missing = [name for name in names if not any(report["model"] == name for report in reports)]
        closing = any(report["closing"] for report in reports)
        status: dict[str, Any] = {"status": "shutting down" if closing else "unavailable" if missing else "ok"}
        if self.api_key is None or has_key(request, self.api_key):
            status["models"] = names
            status["replicas"] = [{key: value for key, value in report.items() if key != "metrics"}
                                  for report in reports]  # fmt: skip
        return JSONResponse(status, status_code=503 if missing else 200)

    async def metrics(self, request: Any) -> Any:
        from starlette.responses import Response

        from slmdeploy.serve.app import has_key
        from slmdeploy.serve.cluster.stats import merged_metrics

        if self.api_key is not None and not has_key(request, self.api_key):
            return _error(ApiError(401, "a valid API key is needed: Authorization: Bearer <key>",
                                   type="authentication_error", code="invalid_api_key"))  # fmt: skip
        body, content_type = merged_metrics(await self.stats.live.remote())
        return Response(body, media_type=content_type)

    async def models(self, request: Any) -> Any:
        """Every deployment's ``/v1/models``, in one list (an error, such as a missing key, as the first answers)."""
        from starlette.responses import JSONResponse

        cards: list[Any] = []
        for _, handle in self.deployments:
            response = await self._relayed(handle, Forwarded.of(request.scope, b""))
            body = b"".join([part async for part in response.body_iterator])
            if response.status_code != 200:
                return JSONResponse(json.loads(body), status_code=response.status_code)
            cards += json.loads(body)["data"]
        return JSONResponse({"object": "list", "data": cards})


async def _body(first: list[Message], answer: Any, streamed: bool) -> AsyncIterator[bytes]:
    """The answer's body as it comes (`first`: what came with its start), a batch at a time; a replica lost
    meanwhile ends a stream with an error chunk."""
    try:
        if body := _joined(first):
            yield body
        async for batch in answer:
            if body := _joined(batch):
                yield body
    except Exception:  # noqa: BLE001 - the replica's worker or node is gone
        if streamed:
            yield _error_chunk(ApiError(503, LOST, type="server_error", code="replica_lost"))
    finally:
        answer.cancel()


def _joined(batch: list[Message]) -> bytes:
    return b"".join(message.get("body", b"") for message in batch if message["type"] == "http.response.body")


def _error_chunk(error: ApiError) -> bytes:
    from sse_starlette import ServerSentEvent

    return ServerSentEvent(data=json.dumps(error.body())).encode()


def _error(error: ApiError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def bind_front(routes: Sequence[tuple[Sequence[str], Any]], stats: Any, guard: dict[str, Any], key: str | None,
               max_connections: int) -> Any:  # fmt: skip
    """The front deployment, one replica using no CPU, on the head node beside Ray Serve's proxy (a front on a worker
    node would be lost with it, and every stream with it, not only those of that node's replicas); as many requests
    at once as connections."""
    from ray import serve

    on_head = {"num_cpus": 0, "resources": {HEAD_NODE_RESOURCE: 0.001}}  # Ray's own marker of the head node
    deployment = serve.deployment(serve.ingress()(Front)).options(
        name="front", num_replicas=1, ray_actor_options=on_head, max_ongoing_requests=max_connections
    )
    return deployment.bind(routes, stats, guard, key)
