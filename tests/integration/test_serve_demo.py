"""`slmdeploy serve` on the demo's SmolLM2 package (built by `nox -s demo`): a real answer, and JSON mode against a
schema through onnxruntime-genai's guidance, with the real openai client."""

from __future__ import annotations

import json

import pytest

from serving import ServerProcess, client, demo_package

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    running = ServerProcess(tmp_path_factory.mktemp("no-project"), "--model", str(demo_package()))
    yield running
    assert running.stop() == 0, running.output()


def ask(server, **fields):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    return client(server).chat.completions.create(model="smollm2-demo-int4", messages=messages, **fields)


def test_the_demo_answers_the_france_question(demo):
    answer = ask(demo, temperature=0, max_tokens=30)
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"


def test_json_mode_against_a_schema(demo):
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": SCHEMA, "strict": True}}
    answer = ask(demo, temperature=0, max_tokens=60, response_format=response_format)
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city", "country"} and all(isinstance(value, str) for value in data.values())


def test_json_object_mode_and_a_seeded_json_answer_repeat(demo):
    fields = {"temperature": 0.9, "seed": 11, "max_tokens": 60, "response_format": {"type": "json_object"}}
    first, again = ask(demo, **fields), ask(demo, **fields)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content.lstrip().startswith("{")
    if first.choices[0].finish_reason == "stop":  # else cut at max_tokens, as OpenAI cuts it
        assert isinstance(json.loads(first.choices[0].message.content), dict)
