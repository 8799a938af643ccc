"""Running a search: every candidate built and evaluated without registration, the best that meets the targets
chosen, then its registration run; ``report.json`` of each candidate says what the search chose, and the report
plugins draw the candidates side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.errors import GateFailed
from slmdeploy.execute.pipeline import Pipeline
from slmdeploy.execute.publish import REPORT
from slmdeploy.execute.results import VariantResult
from slmdeploy.execute.verdicts import write_reports
from slmdeploy.plan.steps import Plan, Variant
from slmdeploy.search.choice import Measured, choose


def build(pipeline: Pipeline) -> list[VariantResult]:
    """Build the plan: a search's candidates and its choice, or, without a search, every variant as planned."""
    if pipeline.plan.search is None:
        return pipeline.build()
    return _search(pipeline)


def _search(pipeline: Pipeline) -> list[VariantResult]:
    plan = pipeline.plan
    assert plan.search is not None
    measuring = attrs.evolve(plan, variants=tuple(_unregistered(variant) for variant in plan.variants))
    results = _pipeline(pipeline, measuring).build()
    chosen = choose(plan.search, [_measured(result) for result in results])
    if chosen is not None:
        pipeline.reporter.say(f"search: {chosen.name} is the best candidate that meets the targets")
        results = _register(pipeline, chosen.name, results)
        for result in results:
            if isinstance(result.error, GateFailed):
                result.fell_back_to = chosen.name
    folders = [result.folder for result in results if result.folder and (result.folder / REPORT).is_file()]
    for folder in folders:
        _annotate(folder / REPORT, plan, chosen.name if chosen else None)
    write_reports(pipeline.registry.manager, folders)
    return results


def summary(plan: Plan, results: Sequence[VariantResult]) -> str | None:
    """One line about the search's choice for the end of a build; None without a search."""
    if plan.search is None:
        return None
    chosen = next((result.variant.name for result in results if result.chosen), None)
    names = ", ".join(variant.name for variant in plan.variants)
    if chosen is None:
        return f"search: no candidate met the targets ({names}); nothing deployed"
    way = "fastest decoder" if plan.search.prefer == "decode" else "smallest package"
    return f"search: deploying {chosen}, the {way} of the candidates that met the targets ({names})"


def _unregistered(variant: Variant) -> Variant:
    return attrs.evolve(variant, steps=tuple(step for step in variant.steps if step.stage != "register"))


def _pipeline(pipeline: Pipeline, plan: Plan) -> Pipeline:
    parts = (pipeline.registry, pipeline.store, pipeline.reporter)
    return Pipeline(plan, *parts, executor=pipeline.executor, reports=False)


def _measured(result: VariantResult) -> Measured:
    metrics = _report(result.folder / REPORT).get("metrics", {}) if result.folder else {}
    return Measured(result.variant.name, metrics, result.folder is not None and result.error is None)


def _register(pipeline: Pipeline, name: str, results: list[VariantResult]) -> list[VariantResult]:
    """Run the chosen candidate's remaining steps (its registration; the rest is cached)."""
    variant = next(variant for variant in pipeline.plan.variants if variant.name == name)
    if any(step.stage == "register" for step in variant.steps):
        (final,) = _pipeline(pipeline, attrs.evolve(pipeline.plan, variants=(variant,))).build()
        results = [final if result.variant.name == name else result for result in results]
    for result in results:
        result.chosen = result.variant.name == name and result.error is None
    return results


def _annotate(file: Path, plan: Plan, chosen: str | None) -> None:
    """Add what the search chose to a candidate's ``report.json`` (through a new file: never into a hard link)."""
    assert plan.search is not None
    report = _report(file)
    report["search"] = {
        "chosen": chosen,
        "prefer": plan.search.prefer,
        "targets": {"min_top1": plan.search.min_top1, "max_size_mb": plan.search.max_size_mb},
        "candidates": [variant.name for variant in plan.variants],
        "note": next((step.note for step in _steps(plan, report.get("variant")) if step.label), ""),
    }
    staged = file.with_name(f".{file.name}.tmp")
    staged.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    staged.replace(file)


def _steps(plan: Plan, name: Any) -> tuple[Any, ...]:
    return next((variant.steps for variant in plan.variants if variant.name == name), ())


def _report(file: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
