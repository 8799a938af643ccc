"""Tool calls without a model: the call format a package declares, the grammar that constrains a call, the parsing
of an answer, and the fallback rendering of tools and of a conversation that holds calls and results."""

from __future__ import annotations

import json

import pytest

from slmdeploy.serve.tools import HERMES, CallFormat, call_format, call_grammar, fallback_messages, parse_call

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                  "required": ["city"]}}  # fmt: skip
MISTRAL = CallFormat("[TOOL_CALLS]", "")


@pytest.mark.parametrize("form", [HERMES, MISTRAL])
def test_a_call_in_the_models_format_is_parsed(form):
    text = f' {form.start}{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}{form.end}\n'
    call = parse_call(text, form)
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert parse_call('{"name": "get_weather"}', form) is None  # no opening text: an answer, not a call
    assert parse_call(f"{form.start}not json{form.end}", form) is None


@pytest.mark.parametrize("form", [HERMES, MISTRAL])
@pytest.mark.parametrize("forced", [True, False])
def test_the_call_grammar_compiles(form, forced):
    llguidance = pytest.importorskip("llguidance", reason="pip install llguidance (the serve extra)")
    grammar = call_grammar([WEATHER], forced, form)
    assert llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(grammar)) == ""
    assert ("TEXT" in grammar) is not forced


def test_the_package_declares_its_call_format(tmp_path):
    assert call_format(tmp_path) == HERMES  # no inference_model.json
    (tmp_path / "inference_model.json").write_text(json.dumps({"ToolCall": {"Start": "[TOOL_CALLS]", "End": ""}}))
    assert call_format(tmp_path) == MISTRAL


def test_the_fallback_lists_the_tools_and_writes_calls_and_results_as_text():
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]  # fmt: skip
    rendered = fallback_messages(messages, [WEATHER], MISTRAL)
    assert rendered[0]["role"] == "system" and rendered[0]["content"].startswith("Be brief.\n\nYou can call")
    assert json.dumps(WEATHER) in rendered[0]["content"] and "[TOOL_CALLS]" in rendered[0]["content"]
    assert rendered[2] == {
        "role": "assistant",
        "content": '[TOOL_CALLS]{"name": "get_weather", "arguments": {"city": "Rome"}}',
    }
    assert rendered[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    assert [turn["role"] for turn in fallback_messages(messages[1:2], [WEATHER])] == ["system", "user"]
