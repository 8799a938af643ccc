"""The HTTP face (FastAPI): ``/v1/models``, ``/v1/chat/completions`` (plain or streamed as server-sent events),
``/health``, ``/metrics``, and the chat page at ``/``. Every error leaves in OpenAI's shape; none with a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from slmdeploy.serve.events import Delta, Failed, Finished, Sampling, TokenLogprob
from slmdeploy.serve.pool import Pool, Served
from slmdeploy.serve.schema import ApiError, ChatCompletionRequest, validation_error

STATIC = files("slmdeploy.serve") / "static"
SHUTDOWN_GRACE_S = 5.0
log = logging.getLogger("slmdeploy.serve")


def make_app(pool: Pool, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        yield
        pool.shut_down()
        await asyncio.to_thread(pool.join, 10.0)

    app = FastAPI(title="slmdeploy serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_handlers(app)
    guarded = [Depends(_key_check(api_key))]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "shutting down" if pool.closing else "ok", "models": [model.name for model in pool.models]}

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        body, content_type = pool.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(served) for served in pool.models]}

    @app.post("/v1/chat/completions", dependencies=guarded, response_model=None)
    async def chat_completions(request: Request) -> Response | dict[str, Any]:
        body = await _parse(request)
        served = pool.find(body.model)
        ids = await asyncio.to_thread(served.loaded.render, [message.as_template_input() for message in body.messages])
        sampling = _sampling(body, served, len(ids))
        pool.admit(served)
        events = pool.run(served, ids, sampling)
        reply = _Reply(served.name, len(ids))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(
                reply.stream(events, include_usage), ping=15, shutdown_grace_period=SHUTDOWN_GRACE_S
            )
        return await reply.whole(events, request)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


async def _parse(request: Request) -> ChatCompletionRequest:
    """The body as JSON whatever its Content-Type says (as OpenAI's API reads it), checked by pydantic."""
    try:
        return ChatCompletionRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_error([dict(item) for item in error.errors()]) from None


def _sampling(body: ChatCompletionRequest, served: Served, prompt_tokens: int) -> Sampling:
    context = served.loaded.context_tokens
    if prompt_tokens >= context:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens, and {served.name}'s context is {context} tokens "
            "(prompt and answer together); shorten the messages",
            param="messages",
            code="context_length_exceeded",
        )
    room = context - prompt_tokens
    guidance = body.response_format.guidance() if body.response_format else None
    return Sampling(
        max_new=min(body.answer_limit() or room, room),
        min_new=min(body.min_tokens, room),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stops=body.stops(),
        guidance=guidance,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        logit_bias=_biases(body, served),
        logprobs=body.wanted_logprobs(),
    )


def _biases(body: ChatCompletionRequest, served: Served) -> tuple[tuple[int, float], ...]:
    vocab = served.loaded.decoder.vocab
    outside = [token for token in body.logit_bias or {} if not 0 <= token < vocab]
    if outside:
        raise ApiError(
            400, f"logit_bias names token {outside[0]}, outside {served.name}'s vocabulary of {vocab}",
            param="logit_bias",
        )  # fmt: skip
    return tuple((body.logit_bias or {}).items())


def _model_card(served: Served) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "slmdeploy"}


class _Reply:
    """One completion's answer, in OpenAI's shapes: a ``chat.completion`` or ``chat.completion.chunk``s."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.prompt_tokens = prompt_tokens

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, finished: Finished) -> dict[str, int]:
        prompt, completion = finished.prompt_tokens or self.prompt_tokens, finished.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def whole(self, events: AsyncIterator[Any], request: Request) -> dict[str, Any]:
        """The whole answer; a client that hangs up meanwhile cancels it."""
        watcher = asyncio.create_task(_cancel_on_disconnect(request, asyncio.current_task()))
        parts: list[str] = []
        logprobs: list[TokenLogprob] | None = None
        try:
            async for event in events:
                if isinstance(event, Delta):
                    parts.append(event.text)
                    if event.logprobs:
                        logprobs = [*(logprobs or []), *event.logprobs]
                elif isinstance(event, Failed):
                    raise ApiError(event.status, event.message, type=_error_type(event.status))
                elif isinstance(event, Finished):
                    message = {"role": "assistant", "content": "".join(parts)}
                    choice = {"index": 0, "message": message, "finish_reason": event.reason,
                              "logprobs": _logprobs(logprobs)}  # fmt: skip
                    return {**self._head("chat.completion"), "choices": [choice], "usage": self._usage(event)}
        finally:
            watcher.cancel()
            await events.aclose()  # type: ignore[attr-defined]
        raise ApiError(500, "the answer ended without a finish", type="server_error")

    async def stream(self, events: AsyncIterator[Any], include_usage: bool) -> AsyncIterator[str]:
        try:
            yield self._chunk({"role": "assistant", "content": ""}, None)
            async for event in events:
                if isinstance(event, Delta):
                    yield self._chunk({"content": event.text}, None, _logprobs(list(event.logprobs) or None))
                elif isinstance(event, Failed):
                    yield json.dumps(ApiError(event.status, event.message, type=_error_type(event.status)).body())
                    return
                elif isinstance(event, Finished):
                    yield self._chunk({}, event.reason)
                    if include_usage:
                        yield json.dumps(
                            {**self._head("chat.completion.chunk"), "choices": [], "usage": self._usage(event)}
                        )
            yield "[DONE]"
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _chunk(self, delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return json.dumps({**self._head("chat.completion.chunk"), "choices": [choice], "usage": None})


def _logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` of a choice: each token with its log-probability and the likeliest alternatives."""
    if tokens is None:
        return None
    return {"content": [_token_logprob(item.token, item.logprob) | {"top_logprobs": [
        _token_logprob(text, logprob) for text, logprob in item.top]} for item in tokens]}  # fmt: skip


def _token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[Any] | None) -> None:
    while task is not None and not await request.is_disconnected():
        await asyncio.sleep(0.25)
    if task is not None:
        task.cancel()


def _error_type(status: int) -> str:
    return {400: "invalid_request_error", 504: "timeout_error"}.get(status, "server_error")


def _key_check(api_key: str | None) -> Any:
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(
                401, "a valid API key is needed: Authorization: Bearer <key>", type="authentication_error",
                code="invalid_api_key",
            )  # fmt: skip

    return check


def _add_error_handlers(app: FastAPI) -> None:
    def answer(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return answer(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return answer(validation_error([dict(item) for item in error.errors()]))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found" if error.status_code == 404 else None
        return answer(ApiError(error.status_code, str(error.detail), code=kind))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %r", request.method, request.url.path, error)
        return answer(ApiError(500, "the server failed on this request; its log says why", type="server_error"))
