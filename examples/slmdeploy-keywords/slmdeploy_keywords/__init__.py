"""A slmdeploy evaluator, ``keywords``: asks the deployed package each question of a JSONL file and counts the
answers that hold every expected keyword.

Select it with ``[evaluate] plugins = ["keywords"]`` and bound its figures in ``[evaluate.gates]``
(``min_keyword_hit_rate = 0.8``); a variant whose answers miss the bound is not registered. Answers are made as
a user gets them: the package's prompt template (``inference_model.json``) and stop tokens (``genai_config.json``),
greedy. This example answers in the build's process; an evaluator that loads large models or can crash should run
that work with ``slmdeploy.plugin.run_in_worker``, as the shipped ``quality`` evaluator does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs

from slmdeploy.plugin import ConfigError, EvaluationReport, Evaluator, Metric, hookimpl, load_genai_model, option

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
        answers = Answerer(artifact.path)
        results = []
        for item in questions:
            text, tokens = answers.answer(item["prompt"], self.options.max_new_tokens)
            hit = all(keyword.lower() in text.lower() for keyword in item["keywords"])
            results.append({**item, "answer": text, "tokens": tokens, "hit": hit})
            self.context.log(f"{len(results)} of {len(questions)}: {'hit' if hit else 'missed'}")
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


class Answerer:
    """Greedy answers through the package's prompt template, ending at its stop tokens."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.model = load_genai_model(folder)
        self.tokenizer = og.Tokenizer(self.model)
        self.prompt = json.loads((folder / "inference_model.json").read_text(encoding="utf-8"))["PromptTemplate"]
        eos = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["eos_token_id"]
        self.stops = set(eos if isinstance(eos, list) else [eos])

    def answer(self, question: str, max_new_tokens: int) -> tuple[str, int]:
        ids = self.tokenizer.encode(self.prompt["prompt"].replace("{Content}", question))
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        tokens: list[int] = []
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in self.stops:
                break
            tokens.append(token)
        return (self.tokenizer.decode(tokens) if tokens else ""), len(tokens)


@hookimpl
def slmdeploy_register_evaluators() -> list[type[Evaluator]]:
    return [KeywordEvaluator]
