"""What passes between the HTTP layer and the engine: a request's sampling settings, the `Job` that carries it, and
the events that answer it (`Delta`, then `Finished` or `Failed`)."""

from __future__ import annotations

import asyncio
import itertools

import attrs


@attrs.frozen
class Sampling:
    """A request's turn settings; None: the package's own (its ``search`` options)."""

    max_new: int
    min_new: int = 0
    """Tokens before the end-of-sequence token may end the answer (vLLM's ``min_tokens``)."""
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stops: tuple[str, ...] = ()
    guidance: tuple[str, str] | None = None
    """(kind, text): ``json_schema`` with the schema as JSON text, or ``lark_grammar`` with a llguidance grammar (a
    tool call's shape); the answer is constrained to it."""
    top_k: int | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time it was generated."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once if it was generated at all."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits before sampling."""
    logprobs: int | None = None
    """None: no log-probabilities; 0: the chosen token's; k: and the k likeliest alternatives (``top_logprobs``)."""


@attrs.frozen
class TokenLogprob:
    """One generated token's log-probability, and the likeliest alternatives' (OpenAI's ``logprobs.content``)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@attrs.frozen
class Delta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens behind `text`, when the request asked for ``logprobs``."""


@attrs.frozen
class Finished:
    reason: str
    """``stop`` or ``length``, as OpenAI names them."""
    prompt_tokens: int
    completion_tokens: int
    tokens: tuple[int, ...] = ()
    """The answer's token ids (the end-of-sequence token included when it ended the answer)."""


@attrs.frozen
class Failed:
    message: str
    status: int = 500


Event = Delta | Finished | Failed


@attrs.define(eq=False)
class Job:
    """One chat completion: asked for on the event loop, answered by the engine thread through `events`."""

    ids: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = attrs.field(factory=asyncio.Queue)
    sequence: int = attrs.field(factory=itertools.count().__next__)
    """Arrival order: the oldest request reading its prompt reads first."""
    adapter: str | None = None
    """The runtime LoRA adapter the request asked for by its model name (``NAME:ADAPTER``); None: the base."""
