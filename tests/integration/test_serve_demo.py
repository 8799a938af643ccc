"""`slmdeploy serve` on the demo's SmolLM2 package (built by `nox -s demo`): a real answer, JSON mode against a
schema through the engine's llguidance constraints, tool calls, and LangChain and LiteLLM in front of it, each the
real client library."""

from __future__ import annotations

import json

import pytest

from serving import ServerProcess, client

SCHEMA = {  # bounded strings: the grammar itself ends the answer well inside max_tokens, so it always parses
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
JSON_ROOM = 200  # tokens: more than the schema's longest answer (two 40-character strings and the keys)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_project):
    package = demo_project / "build" / "int4" / "model"  # the session's demo build, shared with test_demo.py
    running = ServerProcess(tmp_path_factory.mktemp("no-project"), "--model", str(package))
    yield running
    assert running.stop() == 0, running.output()


QUESTIONS = {  # the demo's domain questions (evaluation/domain.jsonl) with a word the answer must hold
    "What is the capital of France?": "Paris",
    "What is the capital of Italy?": "Rome",
    "What color is the sky on a clear day?": "blue",
    "What is the largest planet in our solar system?": "Jupiter",
    "How many days are there in a week?": "seven",
}


def ask(server, question="What is the capital of France?", **fields):
    messages = [{"role": "user", "content": question}]
    return client(server).chat.completions.create(model="smollm2-demo-int4", messages=messages, **fields)


def test_the_demo_answers_its_domain_questions(demo):
    """Greedy answers, judged as the build's domain gate judges them (at least 0.6 of the questions right: one whose
    first token is a near-tie in the source itself cannot decide it). How many answers stop before the limit depends
    on the machine (a 135M model's long answers follow its kernels' rounding), so each answer's finish_reason is
    checked against its own token count instead: "stop" below the limit, "length" at it."""
    limit = 128
    answers = {question: ask(demo, question, temperature=0, max_tokens=limit) for question in QUESTIONS}
    shown = {q: (a.choices[0].message.content, a.choices[0].finish_reason) for q, a in answers.items()}
    right = [q for q, (content, _) in shown.items() if QUESTIONS[q].lower() in content.lower().replace("7", "seven")]
    assert len(right) >= 3, shown
    for question, answer in answers.items():
        expected = "stop" if answer.usage.completion_tokens < limit else "length"
        assert answer.choices[0].finish_reason == expected, (question, answer.usage, shown[question])
    assert any(finish == "stop" for _, finish in shown.values()), shown


def test_json_mode_against_a_schema(demo):
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": SCHEMA, "strict": True}}
    answer = ask(demo, temperature=0, max_tokens=JSON_ROOM, response_format=response_format)
    assert answer.model == "smollm2-demo-int4" and answer.choices[0].finish_reason == "stop", answer
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city", "country"} and all(isinstance(value, str) for value in data.values())
    assert "paris" in data["city"].lower(), data


def test_json_object_mode_answers_an_object(demo):
    answer = ask(demo, temperature=0, max_tokens=JSON_ROOM, response_format={"type": "json_object"})
    assert answer.choices[0].finish_reason == "stop", answer
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_a_seeded_json_answer_repeats_and_parses(demo):
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": SCHEMA}}
    fields = {"temperature": 0.9, "seed": 11, "max_tokens": JSON_ROOM, "response_format": response_format}
    first, again, other = ask(demo, **fields), ask(demo, **fields), ask(demo, **{**fields, "seed": 12})
    assert first.choices[0].message.content == again.choices[0].message.content
    for answer in (first, other):
        assert answer.choices[0].finish_reason == "stop", answer
        assert set(json.loads(answer.choices[0].message.content)) == {"city", "country"}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_a_forced_tool_call_names_the_city_asked_about(demo):
    answer = ask(demo, "What is the weather like in Paris today?", temperature=0, max_tokens=JSON_ROOM,
                 tools=[WEATHER], tool_choice="required")  # fmt: skip
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower(), call


def test_langchain_and_litellm_on_the_demo(demo, monkeypatch):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="smollm2-demo-int4", base_url=f"{demo.url}/v1", api_key="none", temperature=0,
                      max_tokens=JSON_ROOM, max_retries=0)  # fmt: skip
    message = chat.bind_tools([WEATHER], tool_choice="get_weather").invoke("What is the weather like in Rome?")
    assert message.tool_calls[0]["name"] == "get_weather" and "rome" in message.tool_calls[0]["args"]["city"].lower()
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list from the web
    import litellm

    answer = litellm.completion(
        model="openai/smollm2-demo-int4", api_base=f"{demo.url}/v1", api_key="none", temperature=0, max_tokens=64,
        messages=[{"role": "user", "content": "What is the capital of France?"}], user="u-1", metadata={"run": "t"},
    )  # fmt: skip
    assert "Paris" in answer.choices[0].message.content
