"""A slmdeploy evaluator, ``keywords``: asks the deployed package each question of a JSONL file and counts the
answers that hold every expected keyword.

Select it with ``[evaluate] plugins = ["keywords"]`` and bound its figures in ``[evaluate.gates]``
(``min_keyword_hit_rate = 0.8``); a variant whose answers miss the bound is not registered. Answers are made as
a user gets them: the package's prompt template (``inference_model.json``) and stop tokens (``genai_config.json``),
greedy, by `slmdeploy.plugin.genai.GenaiPackage`. The model runs in a worker process
(`slmdeploy.plugin.worker.run_in_worker`), so its memory is returned when the answers are in and a crash of the
runtime fails this stage with its log instead of ending the build.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import attrs

from slmdeploy.plugin import ConfigError, EvaluationReport, Evaluator, Metric, hookimpl, option
from slmdeploy.plugin.genai import GenaiPackage
from slmdeploy.plugin.worker import run_in_worker

__version__ = "0.1.0"


@attrs.define
class KeywordOptions:
    questions: str = option(
        help='a JSONL file, one {"prompt": "...", "keywords": ["..."]} per line, relative to slmdeploy.toml',
        path=True,
    )
    max_new_tokens: int = option(48, help="the longest answer, in tokens", validator=attrs.validators.ge(1))


class KeywordEvaluator(Evaluator):
    PLUGIN_NAME = "keywords"  # [evaluate] plugins = ["keywords"]; its options in [evaluate.keywords]
    Options = KeywordOptions
    METRICS: ClassVar[dict[str, Metric]] = {
        "keyword_hit_rate": Metric("share of questions whose answer holds every keyword (any case)", "fraction"),
        "mean_answer_tokens": Metric("mean answer length", "tokens", higher_is_better=False),
    }

    @classmethod
    def check(cls, options: KeywordOptions) -> None:
        if not options.questions.endswith(".jsonl"):
            raise ConfigError(
                f"{options.questions!r} is not a .jsonl file",
                where="[evaluate.keywords] questions",
                fix='Name a JSON lines file, e.g. questions = "evaluation/keywords.jsonl".',
            )

    def run(self, artifact: Any, output_dir: Path) -> EvaluationReport:
        questions = read_questions(self.context.project_dir / self.options.questions)
        task = {"folder": str(artifact.path), "questions": questions, "max_new_tokens": self.options.max_new_tokens}
        results = run_in_worker("slmdeploy_keywords:answer_in_worker", task, self.context, "keywords")["results"]
        (output_dir / "keywords.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
        metrics = {
            "keyword_hit_rate": sum(result["hit"] for result in results) / len(results),
            "mean_answer_tokens": sum(result["tokens"] for result in results) / len(results),
        }
        return EvaluationReport(output_dir, summary={"metrics": metrics, "questions": len(results)})


def read_questions(file: Path) -> list[dict[str, Any]]:
    """The questions, each with a prompt and a list of keywords; a bad line is an error naming it."""
    questions = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item.get("prompt"), str) or not isinstance(item.get("keywords"), list):
            raise ConfigError(
                f"{file.name}:{number} needs a prompt (a string) and keywords (a list)",
                where="[evaluate.keywords] questions",
                fix='Write each line as {"prompt": "...", "keywords": ["..."]}.',
            )
        questions.append(item)
    if not questions:
        raise ConfigError(f"{file.name} holds no questions", where="[evaluate.keywords] questions", fix="Add some.")
    return questions


def answer_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Runs in the worker: each question's greedy answer, and whether it holds every keyword."""
    package = GenaiPackage(Path(task["folder"]))
    results = []
    for item in task["questions"]:
        answer = package.answer(item["prompt"], task["max_new_tokens"])
        hit = all(keyword.lower() in answer.text.lower() for keyword in item["keywords"])
        results.append({**item, "answer": answer.text, "tokens": len(answer.tokens), "hit": hit})
        progress(f"{len(results)} of {len(task['questions'])}: {'hit' if hit else 'missed'}")
    return {"results": results}


@hookimpl
def slmdeploy_register_evaluators() -> list[type[Evaluator]]:
    return [KeywordEvaluator]
