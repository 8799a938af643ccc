"""Tool calling through `slmdeploy serve`, driven by the real openai client on a tiny random model: forced and
automatic choice, streamed calls, a conversation carrying calls and results, and the template's own ``tools``."""

from __future__ import annotations

import json
import shutil

import httpx
import openai
import pytest

from serving import ServerProcess, client

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer",
                           "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}  # fmt: skip
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS_TEMPLATE = (  # a Hermes-style template that renders the tools itself
    "{% if tools %}<|im_start|>system\nTOOLS: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def server(tiny_serving_project):
    running = ServerProcess(tiny_serving_project, "--threads", "1")
    yield running
    assert running.stop() == 0, running.output()


def ask(server, **fields):
    request = {"model": "tiny-int4", "messages": QUESTION, "max_tokens": 256, "temperature": 0, **fields}
    return client(server).chat.completions.create(**request)


def check_weather_call(call):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments["city"] in ("Paris", "Rome") and 1 <= arguments["days"] <= 7 and set(arguments) == {"city", "days"}
    return arguments


def test_a_named_function_is_always_called_with_valid_arguments(server):
    for seed in range(3):  # sampled too: the grammar, not luck, makes the call valid
        answer = ask(server, tools=[WEATHER, TIME], temperature=1.0, seed=seed,
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})  # fmt: skip
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert len(choice.message.tool_calls) == 1
        check_weather_call(choice.message.tool_calls[0])


def test_required_calls_one_of_the_tools(server):
    choice = ask(server, tools=[WEATHER, TIME], tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    if call.function.name == "get_time":  # either tool is a valid answer; each is checked in full
        assert json.loads(call.function.arguments) == {}
    else:
        check_weather_call(call)


def test_a_streamed_call_is_the_plain_call(server):
    forced = {"tools": [WEATHER], "tool_choice": "required"}
    plain = ask(server, **forced).choices[0].message.tool_calls[0]
    chunks = list(ask(server, **forced, stream=True))
    calls = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or ()]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert (calls[0].function.name, calls[0].function.arguments) == (plain.function.name, plain.function.arguments)
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "tool_calls"
    assert not any(chunk.choices[0].delta.content for chunk in chunks)


def test_auto_answers_a_call_or_text_never_a_broken_call(server):
    for seed in range(4):
        choice = ask(server, tools=[WEATHER], temperature=1.0, seed=seed).choices[0]
        if choice.message.tool_calls:  # the model chose to call: then a whole, valid call
            assert choice.finish_reason == "tool_calls"
            check_weather_call(choice.message.tool_calls[0])
        else:  # or text, which the grammar keeps from starting like a call
            assert choice.finish_reason in ("stop", "length") and not choice.message.content.lstrip().startswith("<")


def test_none_answers_text_and_a_conversation_carries_calls_and_results(server):
    choice = ask(server, tools=[WEATHER], tool_choice="none", extra_body={"min_tokens": 8}, max_tokens=8).choices[0]
    assert choice.finish_reason == "length" and choice.message.tool_calls is None and choice.message.content
    call = ask(server, tools=[WEATHER], tool_choice="required").choices[0].message.tool_calls[0]
    history = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 21}'}]  # fmt: skip
    followed = ask(server, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=4,
                   extra_body={"min_tokens": 4})  # fmt: skip
    assert followed.usage.prompt_tokens > ask(server, max_tokens=1).usage.prompt_tokens + 20  # the call and result
    assert followed.choices[0].finish_reason == "length"


def test_tools_and_a_response_format_together_are_refused(server):
    with pytest.raises(openai.BadRequestError, match="cannot both constrain"):
        ask(server, tools=[WEATHER], response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        ask(server, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})


def test_a_template_that_reads_tools_renders_them_itself(tiny_serving_project, tmp_path):
    from transformers import AutoTokenizer

    package = tmp_path / "package"
    shutil.copytree(tiny_serving_project / "build" / "int4" / "model", package)
    config = json.loads((package / "tokenizer_config.json").read_text())
    (package / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TOOLS_TEMPLATE}))
    (package / "chat_template.jinja").write_text(TOOLS_TEMPLATE)  # where transformers 5 reads it from
    running = ServerProcess(tiny_serving_project, "--threads", "1", "--model", str(package))
    try:
        name = httpx.get(f"{running.url}/v1/models").json()["data"][0]["id"]
        answer = client(running).chat.completions.create(
            model=name, messages=QUESTION, tools=[WEATHER], tool_choice="required", max_tokens=256, temperature=0
        )
        expected = AutoTokenizer.from_pretrained(package).apply_chat_template(
            QUESTION, tools=[WEATHER], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert answer.usage.prompt_tokens == len(expected)  # the template's rendering, not the fallback's
        check_weather_call(answer.choices[0].message.tool_calls[0])
    finally:
        assert running.stop() == 0


def test_a_call_format_the_package_declares_is_the_one_prompted_constrained_and_parsed(tiny_serving_project, tmp_path):
    package = tmp_path / "package"
    shutil.copytree(tiny_serving_project / "build" / "int4" / "model", package)
    info = json.loads((package / "inference_model.json").read_text())
    assert info["ToolCall"] == {"Start": "<tool_call>", "End": "</tool_call>"}  # the chatml family's default
    info["ToolCall"] = {"Start": "[TOOL_CALLS]", "End": ""}  # as a Mistral family declares it
    (package / "inference_model.json").write_text(json.dumps(info))
    running = ServerProcess(tiny_serving_project, "--threads", "1", "--model", str(package))
    try:
        name = httpx.get(f"{running.url}/v1/models").json()["data"][0]["id"]
        body = {"model": name, "messages": QUESTION, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 256,
                "temperature": 0}  # fmt: skip
        answer = client(running).chat.completions.create(**body)
        assert answer.choices[0].finish_reason == "tool_calls"
        check_weather_call(answer.choices[0].message.tool_calls[0])
        fallback = client(running).chat.completions.create(**{**body, "tool_choice": "none", "max_tokens": 1})
        plain = client(running).chat.completions.create(**{**body, "tools": None, "tool_choice": None, "max_tokens": 1})
        assert fallback.usage.prompt_tokens == plain.usage.prompt_tokens  # none: no tools in the prompt
    finally:
        assert running.stop() == 0
