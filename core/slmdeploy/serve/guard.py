"""What keeps browsers and hostile clients out, before a request reaches the API: the ``Host`` header must name this
server (DNS rebinding), a POST's body must be declared ``application/json`` (a cross-origin ``text/plain`` POST is
sent by any web page without a preflight) and may not exceed the body limit (413 before it is read), and a
connection must send its request's headers within a deadline (uvicorn alone keeps a half-sent request open).

CORS is off unless origins are named (``--cors-origin``): then Starlette's ``CORSMiddleware`` answers preflights
for those origins only."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import attrs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
JSON_TYPES = ("application/json",)


@attrs.frozen
class HostPolicy:
    """Which ``Host`` names a request may carry: the bound address's names, and the ones the user allowed."""

    bound: str
    allowed: tuple[str, ...] = ()

    def admits(self, host_header: str) -> bool:
        name = host_name(host_header)
        if not name:
            return False
        if name in {host.lower() for host in self.allowed} or "*" in self.allowed:
            return True
        if self.bound in ("0.0.0.0", "::"):  # every address of the machine: any address literal, no other name
            return name == "localhost" or _is_address(name)
        if is_loopback(self.bound):
            return name in LOOPBACK_NAMES or name == self.bound.lower()
        return name == self.bound.lower()


def host_name(header: str) -> str:
    """The name of a ``Host`` header without its port: ``[::1]:8000`` is ``::1``, ``Example.com:80`` is
    ``example.com``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    return host == "localhost" or (_is_address(host) and ipaddress.ip_address(host).is_loopback)


class Guard:
    """ASGI middleware: Host, content type and body size, each refused in OpenAI's error shape."""

    def __init__(self, app: App, hosts: HostPolicy, max_body_bytes: int) -> None:
        self.app, self.hosts, self.max_body_bytes = app, hosts, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        if scope["method"] == "POST" and "content-length" not in headers:
            body = await _read_at_most(receive, self.max_body_bytes)
            if body is None:
                await _refuse(send, *_too_large(self.max_body_bytes))
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        if not self.hosts.admits(headers.get("host", "")):
            return (400, f"the Host header {headers.get('host', '')!r} does not name this server; start it with "
                    "--allowed-host NAME to be reached under another name", "invalid_host")  # fmt: skip
        if method != "POST":
            return None
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            return (415, f"the request body must be sent as Content-Type: application/json, not "
                    f"{content_type or 'none'!r}", "unsupported_media_type")  # fmt: skip
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return _too_large(self.max_body_bytes)
        return None


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """A body sent without a length (chunked), read up to `limit` bytes; None past it (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: the disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _too_large(limit: int) -> tuple[int, str, str]:
    return (413, f"the request body is larger than this server's limit of {limit} bytes (--max-body-bytes)",
            "request_too_large")  # fmt: skip


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def with_cors(app: Any, origins: Iterable[str]) -> Any:
    """`app` answering cross-origin requests from `origins` only (none: no CORS headers, so browsers keep other
    pages' scripts from reading the answers and from sending JSON at all)."""
    origins = tuple(origins)
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(
        app, allow_origins=list(origins), allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"]
    )


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a deadline for a request's headers: a connection that has not sent a whole
    request head `seconds` after it opened (or after its previous answer) is closed. uvicorn's own keep-alive timeout
    starts only after a first answer, so a client that sends half a request line would hold its connection forever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):  # type: ignore[misc]
        answered = 0
        """Answers this connection has sent: a deadline armed before the latest one has nothing left to watch."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            self.answered += 1
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self.loop.call_later(seconds, self._close_if_still_waiting, self.answered)

        def _close_if_still_waiting(self, answered_then: int) -> None:
            # h11 leaves the client's state IDLE until a whole request head has been read
            waiting = answered_then == self.answered and self.conn.their_state is h11.IDLE
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11Protocol
