"""A request carried from the front to a replica (plain data Ray can pickle), and the replica's ASGI app called on
it in process: its response comes back as ASGI messages, streamed, and the front leaving is the client leaving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs

Message = dict[str, Any]
APP_END_S = 5.0
"""How long a replica's app may take to finish a response after the front has gone (it cancels its answer)."""


@attrs.frozen
class Forwarded:
    """What the front read of a request: its line, headers and whole body (already within the body limit)."""

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""

    @classmethod
    def of(cls, scope: dict[str, Any], body: bytes) -> Forwarded:
        return cls(scope["method"], scope["path"], scope.get("query_string", b""), tuple(scope["headers"]), body)

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": self.method,
            "scheme": "http", "path": self.path, "raw_path": self.path.encode(), "root_path": "",
            "query_string": self.query, "headers": list(self.headers), "client": None, "server": None,
        }  # fmt: skip


async def call_app(app: Any, request: Forwarded) -> AsyncIterator[list[Message]]:
    """`app`'s response to `request`, in batches of the messages ready at once (under load a batch holds several
    tokens' chunks: one Ray object instead of each); closing this early tells the app the client left."""
    messages: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def run() -> None:
        try:
            await app(request.scope(), receive, messages.put)
        finally:
            messages.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        ended = False
        while not ended:
            batch = [await messages.get()]
            while not messages.empty():
                batch.append(messages.get_nowait())
            ended = batch[-1] is None
            yield [message for message in batch if message is not None]
    finally:
        gone.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, APP_END_S)
