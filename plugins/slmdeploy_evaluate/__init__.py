"""slmdeploy's evaluators: ``benchmark`` (speed and memory against the source in PyTorch) and ``quality`` (the
deployment checklist), and the report writer (``report.md`` and plots beside each ``report.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.plugin import Evaluator, Project, hookimpl


@hookimpl
def slmdeploy_register_evaluators() -> list[type[Evaluator]]:
    from slmdeploy_evaluate.benchmark import Benchmark
    from slmdeploy_evaluate.quality import Quality

    return [Benchmark, Quality]


@hookimpl
def slmdeploy_check_project(project: Project) -> None:
    """Read the domain set while planning, so a bad line is reported before anything is built."""
    from slmdeploy_evaluate.checks import read_domain

    evaluate = project.stages.get("evaluate", {})
    domain = evaluate.get("quality", {}).get("domain") if "quality" in evaluate.get("plugins", []) else None
    if isinstance(domain, str) and domain and (project.root / domain).is_file():
        read_domain(project.root / domain)


@hookimpl
def slmdeploy_write_report(build_dir: Path, reports: Sequence[Mapping[str, Any]]) -> None:
    from slmdeploy_evaluate.report import write_reports

    write_reports(reports)
