"""``[evaluate.quality]``: the deployment checklist, measured. Fidelity to the fine-tune, domain answers and their
format, stop tokens, memory over a soak, and edge cases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from slmdeploy.plugin import DeployPackage, EvaluationReport, Metric, StageError, WorkerTimeout, option
from slmdeploy.plugin.fidelity import add_sums, fidelity_figures, fidelity_sums
from slmdeploy.plugin.files import read_text_file
from slmdeploy.plugin.worker import run_in_worker
from slmdeploy_evaluate import checks
from slmdeploy_evaluate.reference import MeasuringEvaluator, context_tokens, shared, source_folder
from slmdeploy_evaluate.texts import EDGE_CASES, ENGLISH, QUESTIONS

MAX_TEXT_TOKENS = 512


@attrs.define
class QualityOptions:
    texts: str = option(
        "", help="a text file whose blank-line separated passages join the built-in English set", path=True
    )
    domain: str = option(
        "", help="a JSONL file of prompts with expectations (contains, regex, exact, json_schema)", path=True
    )
    max_new_tokens: int = option(128, help="the longest answer to a domain prompt or question, in tokens")
    soak_requests: int = option(250, help="requests in the memory soak (0 to skip it)")
    soak_max_tokens: int = option(32, help="the longest answer in the soak, in tokens")
    overlong: Literal["reject", "truncate"] = option(
        "reject", help="what a prompt longer than the context must get: a clean rejection, or an answer to its end"
    )
    edge_timeout_s: float = option(120.0, help="an edge case still running after this many seconds has hung")


class Quality(MeasuringEvaluator):
    PLUGIN_NAME = "quality"
    Options = QualityOptions
    EDGE_WORKER = "slmdeploy_evaluate.answers:edge_case_in_worker"
    METRICS: ClassVar[dict[str, Metric]] = {
        "top1_agreement": Metric("teacher-forced top-1 agreement with the source model", "fraction"),
        "mean_kl": Metric("mean KL divergence of next-token distributions from the source's", "nats", False),
        "perplexity": Metric("perplexity on the text set", "", False),
        "perplexity_increase": Metric("perplexity over the source model's, minus one", "fraction", False),
        "domain_pass_rate": Metric("share of domain prompts whose answer meets its expectations", "fraction"),
        "stop_rate": Metric("share of answers that ended with a stop token, not the length limit", "fraction"),
        "memory_growth_mb": Metric("resident memory growth over the soak (fitted)", "MB", False),
        "edge_case_failures": Metric("edge cases that crashed, hung or were handled against the setting", "", False),
    }

    def run(self, artifact: DeployPackage, output_dir: Path) -> EvaluationReport:
        folder = artifact.path
        result = {
            "fidelity": self._fidelity(folder),
            "answers": self._answers(folder),
            "soak": self._soak(folder),
            "edge_cases": self._edge_cases(folder),
        }
        (output_dir / "quality.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        return EvaluationReport(output_dir, **self._verdict(result))

    def _package(self, folder: Path) -> dict[str, Any]:
        """How a worker opens the package: its folder, threads and, for an adapter's variant, the adapter file
        applied to every generation."""
        adapter = self.context.adapter_file(folder)
        return {"folder": str(folder), "threads": self.threads, **({"adapter": str(adapter)} if adapter else {})}

    def _texts(self) -> list[str]:
        texts = list(ENGLISH)
        if self.options.texts:
            extra = read_text_file(self.context.project_dir / self.options.texts, "[evaluate.quality] texts")
            texts += [passage.strip() for passage in extra.split("\n\n") if passage.strip()]
        return texts

    def _fidelity(self, folder: Path) -> dict[str, Any]:
        import numpy as np

        texts = self._texts()
        limit = min(MAX_TEXT_TOKENS, context_tokens(folder) - 1)
        digest = hashlib.sha256("\n\n".join(texts).encode()).hexdigest()
        source = source_folder(self.context)
        task = {"texts": texts, "max_tokens": limit, "runtime": "torch", "folder": str(source), "label": "source"}

        def make(out: Path) -> None:
            run_in_worker(
                "slmdeploy_evaluate.measure:logits_in_worker", {**task, "out": str(out)}, self.context, "logits-source"
            )

        key = {"texts": digest, "max_tokens": limit, "runtimes": self.cache_version()}
        reference = shared(self.context, "source-logits", key, make)
        ids = [np.load(reference / f"{index}.ids.npy").tolist() for index in range(len(texts))]
        out = self.context.scratch / "logits"
        out.mkdir()
        package = {**self._package(folder), "ids": ids, "runtime": "genai", "out": str(out), "label": "package"}
        run_in_worker("slmdeploy_evaluate.measure:logits_in_worker", package, self.context, "logits-package")
        sums = add_sums(
            fidelity_sums(np.load(reference / f"{index}.npy"), np.load(out / f"{index}.npy"), ids[index])
            for index in range(len(texts))
        )
        figures = fidelity_figures(sums)
        return {
            "texts": len(texts),
            "tokens": int(sums["positions"]),
            "top1_agreement": figures["top1_agreement"],
            "mean_kl": figures["mean_kl"],
            "perplexity": figures["perplexity"],
            "source_perplexity": figures["reference_perplexity"],
        }

    def _answers(self, folder: Path) -> dict[str, Any]:
        domain = checks.read_domain(self.context.project_dir / self.options.domain) if self.options.domain else []
        prompts = [*({"prompt": item["prompt"], "max_tokens": item.get("max_tokens")} for item in domain)]
        prompts += [{"prompt": question} for question in QUESTIONS]
        task = {**self._package(folder), "prompts": prompts, "max_new_tokens": self.options.max_new_tokens}
        answers = run_in_worker("slmdeploy_evaluate.answers:answers_in_worker", task, self.context, "answers")[
            "answers"
        ]
        judged = []
        for item, answer in zip(domain, answers, strict=False):
            judged.append({**item, **answer, "problems": checks.judge_answer(item, answer["answer"])})
        return {
            "domain": judged,
            "questions": [{"prompt": q, **a} for q, a in zip(QUESTIONS, answers[len(domain) :], strict=True)],
            "stop_rate": sum(answer["finish"] == "stop" for answer in answers) / len(answers),
        }

    def _soak(self, folder: Path) -> dict[str, Any] | None:
        if self.options.soak_requests <= 0:
            return None
        task = {
            **self._package(folder),
            "prompts": list(QUESTIONS),
            "requests": self.options.soak_requests,
            "max_new_tokens": self.options.soak_max_tokens,
        }
        soak = run_in_worker("slmdeploy_evaluate.answers:soak_in_worker", task, self.context, "soak")
        return {**soak, **checks.memory_growth(soak["rss_mb"])}

    def _edge_cases(self, folder: Path) -> list[dict[str, Any]]:
        deployed_limit = context_tokens(folder, deployed=True)
        found = []
        for name, case in EDGE_CASES.items():
            task = {
                **self._package(folder),
                "max_new_tokens": 16,
                "truncate": self.options.overlong == "truncate",
                **case,
            }
            expected = None
            if name == "overlong":
                task["content"] = "hello world " * deployed_limit
                expected = "error" if self.options.overlong == "reject" else "answer"
            self.context.log(f"edge case: {name}")
            outcome = self.run_edge_case(task)
            found.append({"case": name, **outcome, "problem": checks.edge_verdict(outcome["outcome"], expected)})
        return found

    def run_edge_case(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one edge case in its own process: an answer or a clean error, else a crash or a hang."""
        try:
            return run_in_worker(self.EDGE_WORKER, task, self.context, "edge-case", timeout=self.options.edge_timeout_s)
        except WorkerTimeout as error:
            return {"outcome": "hang", "message": error.what}
        except StageError as error:
            return {"outcome": "crash", "message": error.what.splitlines()[0]}

    def _verdict(self, result: dict[str, Any]) -> dict[str, Any]:
        fidelity, answers, soak = result["fidelity"], result["answers"], result["soak"]
        failures = [case for case in result["edge_cases"] if case["problem"]]
        metrics = {
            "top1_agreement": fidelity["top1_agreement"],
            "mean_kl": fidelity["mean_kl"],
            "perplexity": fidelity["perplexity"],
            "perplexity_increase": fidelity["perplexity"] / fidelity["source_perplexity"] - 1,
            "stop_rate": answers["stop_rate"],
            "edge_case_failures": len(failures),
        }
        if answers["domain"]:
            metrics["domain_pass_rate"] = sum(not item["problems"] for item in answers["domain"]) / len(
                answers["domain"]
            )
        if soak is not None:
            metrics["memory_growth_mb"] = soak["growth_mb"]
        summary: dict[str, Any] = {
            "metrics": metrics,
            "source_perplexity": fidelity["source_perplexity"],
            "file": "quality.json",
        }
        broken = [case for case in failures if case["outcome"] in ("crash", "hang")]
        if broken:
            summary["failed"] = "; ".join(f"edge case {case['case']!r}: {case['problem']}" for case in broken)
        return {"passed": not broken, "summary": summary}
