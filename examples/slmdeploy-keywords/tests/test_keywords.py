"""The keywords evaluator with slmdeploy's pytest plugin: a tiny random Llama built end to end, its answers
judged, and the gate on them deciding whether the variant passes."""

from __future__ import annotations

import json

from slmdeploy_keywords import KeywordEvaluator

# A random model never writes "Zanzibar"; a question with no keywords is always a hit: the hit rate is 0.5.
QUESTIONS = (
    '{"prompt": "Say anything.", "keywords": []}\n{"prompt": "Where is Stone Town?", "keywords": ["Zanzibar"]}\n'
)
PROJECT = """\
[project]
name = "tiny-keywords"

[source]
path = "{model}"

[convert]
plugin = "olive"

[template]
family = "auto"

[generation]
temperature = 0.0

[evaluate]
plugins = ["keywords"]

[evaluate.keywords]
questions = "keywords.jsonl"
max_new_tokens = 8

[evaluate.gates]
min_keyword_hit_rate = {threshold}
"""


def test_the_gate_judges_the_answers(tiny_model, slmdeploy_project):
    model = tiny_model("llama")
    project = slmdeploy_project(PROJECT.format(model=model, threshold=0.75), files={"keywords.jsonl": QUESTIONS})
    listing = json.loads(project.cli("plugins", "--json").stdout)
    assert {"stage": "evaluate", "name": "keywords"} in next(p for p in listing if p["name"] == "keywords")["provides"]
    failed = project.cli("build")
    assert failed.exit_code == 2, failed.output
    assert "min_keyword_hit_rate" in failed.output and "FAILED" in failed.output
    results = json.loads((project.path / "build" / "default" / "keywords.json").read_text())
    assert [result["hit"] for result in results] == [True, False]
    project.file.write_text(PROJECT.format(model=model, threshold=0.5))
    passed = project.cli("build")  # gates are re-judged on the cached figures: nothing runs again
    assert passed.exit_code == 0, passed.output


def test_a_questions_file_that_is_not_jsonl_is_refused_when_planned(tiny_model, slmdeploy_project):
    text = PROJECT.format(model=tiny_model("llama"), threshold=0.5).replace("keywords.jsonl", "keywords.txt")
    result = slmdeploy_project(text, files={"keywords.txt": QUESTIONS}).cli("plan")
    assert result.exit_code == 2
    assert "[evaluate.keywords] questions: 'keywords.txt' is not a .jsonl file" in " ".join(result.output.split())


def test_metrics_are_declared_for_gates():
    assert set(KeywordEvaluator.METRICS) == {"keyword_hit_rate", "mean_answer_tokens"}
    assert KeywordEvaluator.METRICS["mean_answer_tokens"].higher_is_better is False
