"""``[serve]``: the defaults of ``slmdeploy serve`` for this project (its flags override them). Each limit bounds what
one client can make the server hold or do."""

from __future__ import annotations

import attrs

from slmdeploy.stages import option

_positive = attrs.validators.ge(1)
_optional_positive = attrs.validators.optional(attrs.validators.ge(1))


def replica_range(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` (replicas of each model under autoscaling) as two whole numbers, 1 <= MIN <= MAX."""
    low, colon, high = text.partition(":")
    if not (colon and low.strip().isdigit() and high.strip().isdigit()) or not 1 <= int(low) <= int(high):
        raise ValueError(f"'autoscale' must be \"MIN:MAX\" with whole numbers 1 <= MIN <= MAX: {text!r}")
    return int(low), int(high)


def _valid_autoscale(instance: ServeTable, attribute: attrs.Attribute, value: str | None) -> None:  # type: ignore[type-arg]
    if value is None:
        return
    replica_range(value)
    if instance.replicas != 1:
        raise ValueError(
            f"'autoscale' must be left out when replicas is set (replicas = {instance.replicas}): {value!r}"
        )


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
    ray: bool = option(False, help="serve as Ray Serve deployments on a Ray cluster (slmdeploy serve --ray)")
    address: str | None = option(
        None, help="the Ray cluster to serve on (else RAY_ADDRESS, else a Ray instance started here)"
    )
    replicas: int = option(1, help="replicas of each model on the Ray cluster", validator=_positive)
    autoscale: str | None = option(
        None, help='"MIN:MAX": replicas of each model follow the queue length on the Ray cluster',
        validator=_valid_autoscale,
    )  # fmt: skip
    upscale_delay: float = option(
        30.0, help="seconds the queue must stay long before a replica is added (Ray Serve's upscale_delay_s)",
        validator=attrs.validators.ge(0.0),
    )  # fmt: skip
    downscale_delay: float = option(
        600.0, help="seconds the queue must stay short before a replica is removed (Ray Serve's downscale_delay_s)",
        validator=attrs.validators.ge(0.0),
    )  # fmt: skip
