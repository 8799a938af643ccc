"""``[serve]``: the defaults of ``slmdeploy serve`` for this project (its flags override them). Each limit bounds what
one client can make the server hold or do."""

from __future__ import annotations

import attrs

from slmdeploy.stages import option

_positive = attrs.validators.ge(1)
_optional_positive = attrs.validators.optional(attrs.validators.ge(1))


@attrs.define
class ServeTable:
    max_batch: int = option(8, help="requests decoded together (rows of the engine's batch)", validator=_positive)
    max_queue: int = option(
        32, help="requests that may wait for a row; past them, 429", validator=attrs.validators.ge(0)
    )
    timeout: float = option(
        300.0, help="seconds a request may take; then 504, and its answer stops", validator=attrs.validators.gt(0.0)
    )
    max_body_bytes: int = option(
        4 * 1024 * 1024, help="largest request body; larger is a 413, refused before it is read", validator=_positive
    )
    max_prompt_tokens: int | None = option(
        None,
        help="longest prompt in tokens after the chat template (default: the context)",
        validator=_optional_positive,
    )
    default_max_tokens: int = option(1024, help="answer length when a request names no max_tokens", validator=_positive)
    max_tokens_cap: int | None = option(
        None, help="the most max_tokens a request may ask for (default: what the context leaves)",
        validator=_optional_positive,
    )  # fmt: skip
    max_connections: int = option(
        512, help="open connections at once; past them, 503 (uvicorn's limit_concurrency)", validator=_positive
    )
    header_timeout: float = option(
        10.0, help="seconds a connection may take to send a request's headers; then it is closed",
        validator=attrs.validators.gt(0.0),
    )  # fmt: skip
    keep_alive_timeout: float = option(
        5.0, help="seconds an idle connection is kept open between requests", validator=attrs.validators.gt(0.0)
    )
    allowed_hosts: list[str] = option(
        [], help="more names the Host header may carry (the bound address's own names always may)"
    )
    cors_origins: list[str] = option(
        [], help="web origins whose pages may call the API from a browser (none by default)"
    )
