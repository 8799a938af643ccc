"""Tool calling: the request's functions shown to the model, its answer constrained to a call, and the call parsed
back into OpenAI's ``tool_calls``.

The prompt: where the package's chat template reads a ``tools`` variable (Qwen 2.5, Llama 3.1, Hermes-style
templates), the tools go through it as the model was trained; elsewhere a system turn lists them in the fallback
format below. Either way the model answers a call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(Hermes' and Qwen's form), or in the form its template family declares (`CallFormat`). The answer: a llguidance
grammar per request, so ``required`` and a named function always yield a valid call (its arguments valid against
the function's JSON schema), and ``auto`` lets the model choose between text (which then cannot begin with the
call's first character) and a call. History: an assistant turn's ``tool_calls`` and ``tool`` turns are given to a
template that reads tools as it expects them; the fallback writes them as text."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import attrs

COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@attrs.frozen
class CallFormat:
    """How a model writes a call: this text, the call as JSON ``{"name": ..., "arguments": {...}}``, that text. A
    template family declares its model's (``ChatTemplateFamily.TOOL_CALL``), written into the package's
    ``inference_model.json`` as ``ToolCall``; Hermes' and Qwen's tags otherwise."""

    start: str = "<tool_call>"
    end: str = "</tool_call>"

    def instructions(self) -> str:
        return (
            "You can call the functions below. To call one, answer with nothing but\n"
            f'{self.start}{{"name": "<function name>", "arguments": {{<the arguments as JSON>}}}}{self.end}\n'
            "Functions:\n"
        )


HERMES = CallFormat()


def call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of `functions` (OpenAI's ``function`` objects)."""
    choices = [
        {
            "type": "object",
            "properties": {
                "name": {"const": function["name"]},
                "arguments": function.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for function in functions
    ]
    return {**(choices[0] if len(choices) == 1 else {"anyOf": choices}), "x-guidance": COMPACT_JSON}


def call_grammar(functions: list[dict[str, Any]], forced: bool, form: CallFormat = HERMES) -> str:
    """A llguidance lark grammar: one call to one of `functions`; unless `forced`, or text that does not begin like a
    call (its first character is not the call's)."""
    pieces = [json.dumps(form.start), "call", json.dumps(form.end) if form.end else ""]
    call = f"tool: {' '.join(pieces).strip()}\ncall: %json {json.dumps(call_schema(functions))}\n"
    if forced:
        return "start: tool\n" + call
    first = re.escape(form.start[:1]).replace("/", "\\/")
    return "start: tool | TEXT\n" + call + f"TEXT: /[^{first}][\\s\\S]*/\n"


def parse_call(text: str, form: CallFormat = HERMES) -> dict[str, Any] | None:
    """The call in an answer, in OpenAI's ``tool_calls`` item shape; None if the answer is text."""
    stripped = text.strip()
    if not (stripped.startswith(form.start) and stripped.endswith(form.end)):
        return None
    try:
        call = json.loads(stripped[len(form.start) : len(stripped) - len(form.end)])
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def call_format(package: Path) -> CallFormat:
    """The call format a package's ``inference_model.json`` declares (``ToolCall``: ``Start``, ``End``); Hermes'
    when it declares none."""
    info = package / "inference_model.json"
    declared = json.loads(info.read_text(encoding="utf-8")).get("ToolCall") if info.is_file() else None
    return CallFormat(declared["Start"], declared["End"]) if declared else HERMES


def template_reads_tools(chat_template: str) -> bool:
    """Whether a chat template renders a ``tools`` variable (otherwise the fallback format is used)."""
    return "tools" in chat_template


def fallback_messages(
    messages: list[dict[str, Any]], functions: list[dict[str, Any]], form: CallFormat = HERMES
) -> list[dict[str, str]]:
    """`messages` for a template that knows no tools: the functions in the system turn, calls and results as text."""
    listing = form.instructions() + "\n".join(json.dumps(function, ensure_ascii=False) for function in functions)
    rendered = [as_text_turn(message, form) for message in messages]
    if functions:
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{listing}"}
        else:
            rendered.insert(0, {"role": "system", "content": listing})
    return rendered


def as_text_turn(message: dict[str, Any], form: CallFormat = HERMES) -> dict[str, str]:
    """One turn as plain text: an assistant's calls written as it would have answered them, a tool's result as a
    user turn holding it (most templates know no ``tool`` role)."""
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"}
    calls = "".join(
        form.start + json.dumps({"name": call["function"]["name"], "arguments": _arguments(call)}) + form.end
        for call in message.get("tool_calls") or ()
    )
    return {"role": message["role"], "content": (message.get("content") or "") + calls}


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` for a template that reads tools: calls' arguments as objects (as transformers' templates expect)."""
    return [
        {**message, "tool_calls": [_as_object(call) for call in message["tool_calls"]]}
        if message.get("tool_calls")
        else message
        for message in messages
    ]


def _as_object(call: dict[str, Any]) -> dict[str, Any]:
    return {**call, "function": {**call["function"], "arguments": _arguments(call)}}


def _arguments(call: dict[str, Any]) -> Any:
    arguments = call["function"].get("arguments", "{}")
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return arguments
