"""The request body of ``POST /v1/chat/completions`` (pydantic, so every field is checked where it enters), and
errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Unknown fields are refused (400, naming the field) rather than ignored: a client that asks for something the server
does not do hears so."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": self.role, "content": text}


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
        """onnxruntime-genai's guidance for this format: a JSON schema (any object for ``json_object``)."""
        if self.type == "json_object":
            return "json_schema", json.dumps({"type": "object"})
        if self.type == "json_schema":
            if self.json_schema is None:
                raise ApiError(400, "response_format json_schema needs a json_schema", param="response_format")
            return "json_schema", json.dumps(self.json_schema.schema_ or {"type": "object"})
        return None


class ChatCompletionRequest(Strict):
    """The fields this server honours; any other is a 400 naming it."""

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int = Field(default=0, ge=0)
    """Not OpenAI's: vLLM's extension, the least tokens before the end-of-sequence token may end the answer."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    n: int = 1
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[int, float] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_k: int | None = Field(default=None, ge=0)
    """Not OpenAI's: vLLM's extension, the likeliest tokens kept before the draw (0: all)."""
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    """Not OpenAI's: vLLM's extension, Hugging Face's penalty on every token already in the text."""

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value and (len(value) > 300 or not all(-100 <= bias <= 100 for bias in value.values())):
            raise ValueError("logit_bias is up to 300 token ids, each with a bias from -100 to 100")
        return value

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
        if len(stops) > 4 or not all(stops):
            raise ValueError("stop is up to 4 non-empty strings")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def wanted_logprobs(self) -> int | None:
        """None: no log-probabilities; k: the chosen token's and the k likeliest alternatives'."""
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


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
