"""The HTTP face (FastAPI): ``/v1/models``, ``/v1/chat/completions`` and the legacy ``/v1/completions`` (plain or
streamed as server-sent events),
``/health``, ``/metrics``, and the chat page at ``/``. Every error leaves in OpenAI's shape; none with a traceback."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from slmdeploy.serve.events import Sampling
from slmdeploy.serve.pool import Limits, Pool, Served
from slmdeploy.serve.reply import Reply, TextReply
from slmdeploy.serve.schema import ApiError, ChatCompletionRequest, CompletionRequest, Generation, validation_error

STATIC = files("slmdeploy.serve") / "static"
Body = TypeVar("Body", bound=Generation)
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
    async def health(request: Request) -> dict[str, Any]:
        """Up or not, for anyone; which models are served, only to a client that may use them."""
        status: dict[str, Any] = {"status": "shutting down" if pool.closing else "ok"}
        if api_key is None or has_key(request, api_key):
            status["models"] = [model.name for model in pool.models]
        return status

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        body, content_type = pool.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        cards = [_model_card(served, name) for served in pool.models for name in served.loaded.spec.listed_names()]
        return {"object": "list", "data": cards}

    @app.post("/v1/chat/completions", dependencies=guarded, response_model=None)
    async def chat_completions(request: Request) -> Response | dict[str, Any]:
        body = await _parse(request, ChatCompletionRequest)
        served = pool.find(body.model)
        tools = [tool.model_dump(exclude_none=True) for tool in body.tools or ()] if body.calls_tools() else None
        messages = [message.as_template_input() for message in body.messages]
        ids = await asyncio.to_thread(served.loaded.render, messages, tools)
        calls = served.loaded.tool_call if tools is not None else None
        return await _answer(
            request, body, served, ids, Reply(_reply_name(served, pool.adapter(body.model)), len(ids), calls)
        )

    @app.post("/v1/completions", dependencies=guarded, response_model=None)
    async def completions(request: Request) -> Response | dict[str, Any]:
        body = await _parse(request, CompletionRequest)
        served = pool.find(body.model)
        ids = (
            body.prompt if isinstance(body.prompt, list) else await asyncio.to_thread(served.loaded.encode, body.prompt)
        )
        _check_token_ids(ids, served, "prompt")
        return await _answer(
            request, body, served, ids, TextReply(_reply_name(served, pool.adapter(body.model)), len(ids))
        )

    async def _answer(
        request: Request, body: Generation, served: Served, ids: list[int], reply: Reply
    ) -> Response | dict[str, Any]:
        sampling = _sampling(body, served, len(ids), pool.limits)
        pool.admit(served)
        events = pool.run(served, ids, sampling, pool.adapter(body.model))
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


async def _parse(request: Request, kind: type[Body]) -> Body:
    """The body, JSON (its Content-Type was checked by `slmdeploy.serve.guard`), checked by pydantic."""
    try:
        return kind.model_validate_json(await request.body())
    except ValidationError as error:
        raise validation_error([dict(item) for item in error.errors()]) from None


def _check_token_ids(ids: list[int] | tuple[int, ...], served: Served, param: str) -> None:
    vocabulary = served.loaded.decoder.vocab
    outside = [token for token in ids if not 0 <= token < vocabulary]
    if outside:
        raise ApiError(
            400, f"{param} names token {outside[0]}, outside {served.name}'s vocabulary of {vocabulary}", param=param
        )


def _sampling(body: Generation, served: Served, prompt_tokens: int, limits: Limits) -> Sampling:
    context = served.loaded.context_tokens
    _check_prompt(served.name, prompt_tokens, context, limits.max_prompt_tokens)
    room = context - prompt_tokens
    _check_token_ids([token for token, _ in body.token_biases()], served, "logit_bias")
    asked = body.answer_limit()
    if asked is not None and limits.max_tokens_cap is not None and asked > limits.max_tokens_cap:
        raise ApiError(
            400,
            f"max_tokens is {asked}, more than this server's limit of {limits.max_tokens_cap} (--max-tokens-cap)",
            param="max_tokens",
        )
    return Sampling(
        max_new=min(asked or limits.default_max_tokens, room),
        min_new=min(body.min_tokens, room),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stops=body.stops(),
        guidance=body.guidance(served.loaded.tool_call),
        top_k=body.top_k or None,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        logit_bias=body.token_biases(),
        logprobs=body.logprob_count(),
    )


def _check_prompt(name: str, prompt_tokens: int, context: int, most: int | None) -> None:
    if prompt_tokens >= context:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens, and {name}'s context is {context} tokens "
            "(prompt and answer together); shorten the messages",
            param="messages",
            code="context_length_exceeded",
        )
    if most is not None and prompt_tokens > most:
        raise ApiError(
            400,
            f"the prompt is {prompt_tokens} tokens, more than this server's limit of {most} (--max-prompt-tokens); "
            "shorten the messages",
            param="messages",
            code="context_length_exceeded",
        )


def _reply_name(served: Served, adapter: str | None) -> str:
    """The model a reply names: the served name, with the runtime LoRA adapter the request asked for."""
    return f"{served.name}:{adapter}" if adapter else served.name


def _model_card(served: Served, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": served.created, "owned_by": "slmdeploy"}


def has_key(request: Request, api_key: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), api_key.encode())


def _key_check(api_key: str | None) -> Any:
    async def check(request: Request) -> None:
        if api_key is not None and not has_key(request, api_key):
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
