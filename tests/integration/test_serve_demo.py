"""`slmdeploy serve` on the demo's SmolLM2 package (built by `nox -s demo`): a real answer, and JSON mode against a
schema through the engine's llguidance constraints, with the real openai client."""

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
