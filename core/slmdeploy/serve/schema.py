"""The request body of ``POST /v1/chat/completions`` (pydantic, so every field is checked where it enters), and
errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

A field this server does not know is refused (400, naming it) rather than dropped: a client that asks for something
the server does not do hears so. The fields that cannot change a local model's answer (`IGNORED`: who the user is,
metadata, storage and service tier) are accepted and ignored, as vLLM does, so agent frameworks and chat front-ends
that always send them work."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from slmdeploy.serve.messages import Message, NamedToolChoice, Strict, Tool
from slmdeploy.serve.tools import COMPACT_JSON, HERMES, CallFormat, call_grammar


class ApiError(Exception):
    """An answer in OpenAI's error shape with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's name for the field
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls")  # see ChatCompletionRequest
"""Accepted and ignored: none changes what a local model answers (``parallel_tool_calls``: at most one call is made
per answer whatever it says)."""
MAX_STOPS = 4
MAX_LOGIT_BIAS = 300  # OpenAI's own limit on the entries of logit_bias
MAX_TOP_LOGPROBS = 20  # OpenAI's
LEGACY_MAX_TOKENS = 16  # /v1/completions' default answer length, as OpenAI's and vLLM's


class StreamOptions(Strict):
    include_usage: bool = False


class JsonSchema(Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    def guidance(self) -> tuple[str, str] | None:
        """The guidance for this format: a JSON schema (any object for ``json_object``), written without free
        whitespace (`COMPACT_JSON`: a small model can otherwise wander in newlines until its token limit)."""
        if self.type == "json_object":
            return "json_schema", json.dumps({"type": "object", "x-guidance": COMPACT_JSON})
        if self.type == "json_schema":
            if self.json_schema is None:
                raise ApiError(400, "response_format json_schema needs a json_schema", param="response_format")
            schema = self.json_schema.schema_ or {"type": "object"}
            return "json_schema", json.dumps({**schema, "x-guidance": COMPACT_JSON})
        return None


class Generation(Strict):
    """The fields both completion endpoints share: the model, the answer's length, sampling, stops, streaming; and
    those accepted and ignored (`IGNORED`). Any other field is a 400 naming it."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int = Field(default=0, ge=0)
    """Not OpenAI's: vLLM's extension, the least tokens before the end-of-sequence token may end the answer."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    """Not OpenAI's: vLLM's and llama-server's; 0 or absent: no top-k cut."""
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    """Not OpenAI's: vLLM's; 1 is none."""
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=MAX_LOGIT_BIAS)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    n: int = 1
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported: ask again for another answer")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS or not all(stops):
            raise ValueError(f"stop is up to {MAX_STOPS} non-empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit() or not -100 <= bias <= 100:
                raise ValueError(f"logit_bias maps token ids to a bias from -100 to 100; {token!r}: {bias} is not")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> Generation:
        limit = self.answer_limit()
        if limit is not None and self.min_tokens > limit:
            raise ValueError(f"min_tokens ({self.min_tokens}) is more than max_tokens ({limit})")
        return self

    def logprob_count(self) -> int | None:
        """None: no log-probabilities; else how many alternatives beside the chosen token."""
        return None

    def token_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items())

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def answer_limit(self) -> int | None:
        return self.max_tokens

    def guidance(self, call_format: CallFormat = HERMES) -> tuple[str, str] | None:
        """The constraint on the answer's text (`Sampling.guidance`), if any; tool calls in `call_format`."""
        return None


class ChatCompletionRequest(Generation):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """None: ``auto`` when there are tools, as OpenAI's API does."""
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError(f"two tools share a name: {', '.join(names)}")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools")
        if choice == "required" and not names:
            raise ValueError('tool_choice "required" needs tools')
        if self.calls_tools() and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("response_format and tools cannot both constrain one answer; send one of them")
        return self

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def guidance(self, call_format: CallFormat = HERMES) -> tuple[str, str] | None:
        if self.calls_tools():
            return "lark_grammar", call_grammar(self.callable_functions(), self.call_forced(), call_format)
        return self.response_format.guidance() if self.response_format else None

    def calls_tools(self) -> bool:
        """Whether the answer may be a call: tools given, and tool_choice not ``none``."""
        return bool(self.tools) and self.tool_choice != "none"

    def callable_functions(self) -> list[dict[str, Any]]:
        """The functions the answer may call (a named tool_choice: that one only)."""
        functions = [tool.function.model_dump(exclude_none=True) for tool in self.tools or ()]
        if isinstance(self.tool_choice, NamedToolChoice):
            return [function for function in functions if function["name"] == self.tool_choice.function.name]
        return functions

    def call_forced(self) -> bool:
        return self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)


class CompletionRequest(Generation):
    """``POST /v1/completions`` (the legacy endpoint): a prompt as text or token ids, continued as it is."""

    prompt: str | list[int]
    """Text, or token ids; a list of one prompt (OpenAI's batch form) is taken as that prompt."""
    max_tokens: int | None = Field(default=LEGACY_MAX_TOKENS, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: Literal[False] = False
    """The prompt repeated before the answer: not offered (a 400, naming it)."""
    best_of: Literal[1] = 1
    suffix: None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], (str, list)):
            if len(value) != 1:
                raise ValueError("one prompt per request: send each prompt in a request of its own")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty")
        return value

    def logprob_count(self) -> int | None:
        return self.logprobs


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """pydantic's first complaint about a request, as OpenAI words it: which field, and what is wrong."""
    error: dict[str, Any] = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if error["type"] == "json_invalid":
        return ApiError(
            400, f"the request body is not valid JSON: {error.get('ctx', {}).get('error', '')}".rstrip(": ")
        )
    location = [str(part) for part in error["loc"] if part != "body"]
    param = ".".join(location) or None
    if error["type"] == "extra_forbidden":
        return ApiError(400, f"unsupported field {param!r}: this server does not honour it", param=param)
    if error["type"] == "missing":
        return ApiError(400, f"missing required field {param!r}", param=param)
    message = str(error["msg"]).removeprefix("Value error, ")
    return ApiError(400, f"invalid {param or 'request'}: {message}", param=param)
