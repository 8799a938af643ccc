"""`slmdeploy serve` driven by the client libraries people put in front of a local model: LangChain's ChatOpenAI
(tools bound with a forced choice, structured output) and LiteLLM's completion (with `user` and `metadata`), and the
legacy completions endpoint through the openai client."""

from __future__ import annotations

import json
import os

import pytest
from test_serve_tools import WEATHER

from serving import ServerProcess, client

CITY = {  # bounded, so a random model's answer always completes within max_tokens
    "title": "City",
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "rank": {"type": "integer", "minimum": 1,
                   "maximum": 9}},
    "required": ["city", "rank"],
    "additionalProperties": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_serving_project):
    running = ServerProcess(tiny_serving_project, "--threads", "1")
    yield running
    assert running.stop() == 0, running.output()


def chat_model(server):
    langchain_openai = pytest.importorskip("langchain_openai", reason="pip install langchain-openai")
    return langchain_openai.ChatOpenAI(
        model="tiny-int4", base_url=f"{server.url}/v1", api_key="none", temperature=0, max_tokens=256, max_retries=0
    )


def test_langchain_bind_tools_with_a_forced_tool_returns_a_parsed_call(server):
    bound = chat_model(server).bind_tools([WEATHER], tool_choice="get_weather")
    message = bound.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert call["args"]["city"] in ("Paris", "Rome") and 1 <= call["args"]["days"] <= 7
    assert message.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(server, method):
    structured = chat_model(server).with_structured_output(CITY, method=method)
    answer = structured.invoke("Name a city.")
    assert answer["city"] in ("Paris", "Rome") and 1 <= answer["rank"] <= 9 and set(answer) == {"city", "rank"}


def test_litellm_completion_with_user_and_metadata(server, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list from the web
    litellm = pytest.importorskip("litellm", reason="pip install litellm")
    request = {"model": "openai/tiny-int4", "api_base": f"{server.url}/v1", "api_key": "none", "temperature": 0,
               "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "min_tokens": 6}  # fmt: skip
    answer = litellm.completion(**request, user="user-7", metadata={"session": "s-1"})
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 6
    plain = litellm.completion(**request)
    assert answer.choices[0].message.content == plain.choices[0].message.content
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


def test_legacy_completions_plain_streamed_and_from_token_ids(server, tiny_serving_project):
    openai_client = client(server)
    fields = {"model": "tiny-int4", "max_tokens": 8, "temperature": 0, "extra_body": {"min_tokens": 8}}
    plain = openai_client.completions.create(prompt="Once upon a time", **fields)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 8 and plain.choices[0].text
    streamed = "".join(chunk.choices[0].text for chunk in openai_client.completions.create(
        prompt="Once upon a time", stream=True, **fields) if chunk.choices)  # fmt: skip
    assert streamed == plain.choices[0].text
    from transformers import AutoTokenizer

    package = tiny_serving_project / "build" / "int4" / "model"
    ids = AutoTokenizer.from_pretrained(package)("Once upon a time")["input_ids"]
    from_ids = openai_client.completions.create(prompt=ids, **fields)
    assert from_ids.usage.prompt_tokens == len(ids) == plain.usage.prompt_tokens
    assert from_ids.choices[0].text == plain.choices[0].text
    assert json.loads(plain.model_dump_json())["choices"][0]["index"] == 0
