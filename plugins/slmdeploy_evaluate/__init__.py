"""slmdeploy's evaluators: ``benchmark`` (speed and memory against the source in PyTorch) and ``quality`` (the
deployment checklist), and the report writer (``report.md`` and plots beside each ``report.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.plugin import Evaluator, ProjectOptions, hookimpl


@hookimpl
def slmdeploy_register_evaluators() -> list[type[Evaluator]]:
    from slmdeploy_evaluate.benchmark import Benchmark
    from slmdeploy_evaluate.quality import Quality

    return [Benchmark, Quality]


@hookimpl
def slmdeploy_check_project(options: ProjectOptions) -> None:
    """Read the domain set and the texts while planning, so a bad file is reported before anything is built."""
    from slmdeploy.plugin.files import read_text_file
    from slmdeploy_evaluate.checks import read_domain

    project = options.project
    selected = options.table("evaluate.quality")
    quality = selected.options if selected is not None else {}
    texts, domain = quality.get("texts"), quality.get("domain")
    if isinstance(texts, str) and texts and (project.root / texts).is_file():
        read_text_file(project.root / texts, f"{project.locate('evaluate.quality.texts')} [evaluate.quality] texts")
    if isinstance(domain, str) and domain and (project.root / domain).is_file():
        read_text_file(project.root / domain, f"{project.locate('evaluate.quality.domain')} [evaluate.quality] domain")
        read_domain(project.root / domain)


@hookimpl
def slmdeploy_write_report(build_dir: Path, reports: Sequence[Mapping[str, Any]]) -> None:
    from slmdeploy_evaluate.report import write_reports

    write_reports(reports)
