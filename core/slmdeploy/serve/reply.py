"""A completion's answer in OpenAI's shapes, whole or streamed as server-sent events, from the engine's events."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from slmdeploy.serve.events import Delta, Failed, Finished, TokenLogprob
from slmdeploy.serve.schema import ApiError
from slmdeploy.serve.tools import CallFormat, parse_call


class Reply:
    """One completion's answer, in OpenAI's shapes: a ``chat.completion`` or ``chat.completion.chunk``s; with `calls`
    (the model's call format), an answer that is a tool call becomes ``tool_calls`` (streamed as one
    ``delta.tool_calls`` once it is whole)."""

    CHUNK_OBJECT = "chat.completion.chunk"
    """The ``object`` of a streamed piece (and of the usage chunk)."""

    def __init__(self, model: str, prompt_tokens: int, calls: CallFormat | None = None) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.calls = calls

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _usage(self, finished: Finished) -> dict[str, int]:
        prompt, completion = finished.prompt_tokens or self.prompt_tokens, finished.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _call(self, text: str, finished: Finished) -> dict[str, Any] | None:
        return parse_call(text, self.calls) if self.calls is not None and finished.reason == "stop" else None

    async def whole(self, events: AsyncIterator[Any], request: Request) -> dict[str, Any]:
        """The whole answer; a client that hangs up meanwhile cancels it."""
        watcher = asyncio.create_task(_cancel_on_disconnect(request, asyncio.current_task()))
        parts: list[str] = []
        tokens: list[TokenLogprob] = []
        try:
            async for event in events:
                if isinstance(event, Delta):
                    parts.append(event.text)
                    tokens += event.logprobs
                elif isinstance(event, Failed):
                    raise ApiError(event.status, event.message, type=error_type(event.status))
                elif isinstance(event, Finished):
                    return self._completion("".join(parts), event, tokens)
        finally:
            watcher.cancel()
            await events.aclose()  # type: ignore[attr-defined]
        raise ApiError(500, "the answer ended without a finish", type="server_error")

    def _completion(self, text: str, finished: Finished, tokens: list[TokenLogprob]) -> dict[str, Any]:
        call = self._call(text, finished)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        reason = finished.reason
        if call is not None:
            message, reason = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": self._logprobs(tokens)}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self._usage(finished)}

    async def stream(self, events: AsyncIterator[Any], include_usage: bool) -> AsyncIterator[str]:
        held: list[str] = []  # text that may be the start of a tool call, not sent until that is known
        tokens: list[TokenLogprob] = []  # its tokens' log-probabilities, when asked for
        try:
            opening = self._chunk({"role": "assistant", "content": ""}, None)
            if opening:
                yield opening
            async for event in events:
                if isinstance(event, Delta):
                    held.append(event.text)
                    tokens += event.logprobs
                    if not self._may_be_call("".join(held)):
                        yield self._chunk({"content": "".join(held)}, None, self._logprobs(tokens))
                        held.clear()
                        tokens.clear()
                elif isinstance(event, Failed):
                    yield json.dumps(ApiError(event.status, event.message, type=error_type(event.status)).body())
                    return
                elif isinstance(event, Finished):
                    for chunk in self._last_chunks("".join(held), tokens, event, include_usage):
                        yield chunk
            yield "[DONE]"
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _may_be_call(self, text: str) -> bool:
        start = text.lstrip()
        form = self.calls
        return form is not None and (form.start.startswith(start) or start.startswith(form.start))

    def _last_chunks(self, held: str, tokens: list[TokenLogprob], finished: Finished, include_usage: bool) -> list[str]:
        call = self._call(held, finished)
        if call is not None:
            chunks = [self._chunk({"tool_calls": [{"index": 0, **call}]}, None), self._chunk({}, "tool_calls")]
        else:
            chunks = [self._chunk({"content": held}, None, self._logprobs(tokens))] if held else []
            chunks.append(self._chunk({}, finished.reason))
        if include_usage:
            chunks.append(self._usage_chunk(finished))
        return chunks

    def _usage_chunk(self, finished: Finished) -> str:
        return json.dumps({**self._head(self.CHUNK_OBJECT), "choices": [], "usage": self._usage(finished)})

    def _chunk(self, delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return json.dumps({**self._head(self.CHUNK_OBJECT), "choices": [choice], "usage": None})

    def _logprobs(self, tokens: list[TokenLogprob]) -> dict[str, Any] | None:
        """OpenAI's ``logprobs`` of a chat choice: each token with its log-probability and the likeliest
        alternatives; None when none were asked for."""
        if not tokens:
            return None
        return {"content": [_token_logprob(item.token, item.logprob) | {"top_logprobs": [
            _token_logprob(text, logprob) for text, logprob in item.top]} for item in tokens]}  # fmt: skip


class TextReply(Reply):
    """A legacy completion's answer: ``text_completion`` objects, whole or streamed."""

    CHUNK_OBJECT = "text_completion"

    def __init__(self, model: str, prompt_tokens: int) -> None:
        super().__init__(model, prompt_tokens)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def _completion(self, text: str, finished: Finished, tokens: list[TokenLogprob]) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "finish_reason": finished.reason, "logprobs": self._logprobs(tokens)}
        return {**self._head("text_completion"), "choices": [choice], "usage": self._usage(finished)}

    def _chunk(self, delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None) -> str:
        if "role" in delta:  # chat's opening chunk: a text completion has none
            return ""
        choice = {"index": 0, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": logprobs}
        return json.dumps({**self._head(self.CHUNK_OBJECT), "choices": [choice], "usage": None})

    def _logprobs(self, tokens: list[TokenLogprob]) -> dict[str, Any] | None:
        """The legacy endpoint's ``logprobs``: parallel lists of tokens, their log-probabilities, the likeliest
        alternatives (a dict each) and each token's offset in the text."""
        if not tokens:
            return None
        offsets = list(itertools.accumulate((len(item.token) for item in tokens[:-1]), initial=0))
        return {"tokens": [item.token for item in tokens], "token_logprobs": [item.logprob for item in tokens],
                "top_logprobs": [dict(item.top) for item in tokens], "text_offset": offsets}  # fmt: skip


def _token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[Any] | None) -> None:
    while task is not None and not await request.is_disconnected():
        await asyncio.sleep(0.25)
    if task is not None:
        task.cancel()


def error_type(status: int) -> str:
    return {400: "invalid_request_error", 504: "timeout_error"}.get(status, "server_error")
