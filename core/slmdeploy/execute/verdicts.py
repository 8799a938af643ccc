"""After a variant's evaluators ran: the error that stops it (a failed gate or evaluator), what its
``report.json`` says, and the report plugins that write what people read."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmdeploy.artifacts import EvaluationReport
from slmdeploy.config.gates import GateResult, Metric, gate_table
from slmdeploy.errors import GateFailed, SlmdeployError, plugin_code
from slmdeploy.execute.publish import REPORT

if TYPE_CHECKING:
    import pluggy

    from slmdeploy.plan.planner import Plan


def gate_error(plan: Plan, variant: str, gates: Sequence[GateResult]) -> GateFailed | None:
    """The error naming every failed gate with the table of all of them, or None when all passed."""
    failed = [result for result in gates if not result.passed]
    if not failed:
        return None
    chain = plan.fallback
    following = chain[chain.index(variant) + 1 :] if variant in chain else ()
    figures = f"build/{variant}/report.md"
    return GateFailed(
        f"{variant} failed {len(failed)} of {len(gates)} gates, so it is not registered",
        where=plan.project.locate("evaluate.gates"),
        fix=f"Falling back to {following[0]}; the figures: {figures}."
        if following
        else 'Relax the thresholds in [evaluate.gates], build a higher precision (fallback = ["int4", "int8", '
        f'"fp32"]), or improve the model. The figures: {figures}.',
        details=textwrap.indent(gate_table(gates), "  "),
    )


def evaluator_failed(plugin: str, table: str, report: EvaluationReport) -> GateFailed:
    """An evaluator's own verdict (a crash in an edge case, say), whatever the gates say."""
    return GateFailed(
        f"evaluation {plugin!r} failed: {report.summary.get('failed', 'a check')}",
        fix=f"See {report.path} for the figures, or change the options in [{table}].",
    )


def evaluation_record(
    reports: Sequence[tuple[str, EvaluationReport]],
    metrics: Mapping[str, Any],
    gates: Sequence[GateResult] | None,
    error: SlmdeployError | None,
    definitions: Mapping[str, Metric],
) -> dict[str, Any] | None:
    """What ``report.json`` says about a variant's evaluation, or None when no evaluator ran."""
    if not reports:
        return None
    return {
        "status": "failed" if isinstance(error, GateFailed) else "passed",
        "metrics": dict(metrics),
        "units": {name: definitions[name].unit for name in metrics if name in definitions},
        "gates": [result.as_json() for result in gates or []],
        "evaluators": {plugin: report.summary for plugin, report in reports},
    }


def write_reports(manager: pluggy.PluginManager, folders: Sequence[Path]) -> None:
    """Let report plugins write what a person reads (tables, plots) beside each ``report.json``."""
    if not folders:
        return
    reports = [
        {**json.loads((folder / REPORT).read_text(encoding="utf-8")), "folder": str(folder)} for folder in folders
    ]
    with plugin_code("a plugin's slmdeploy_write_report hook"):
        manager.hook.slmdeploy_write_report(build_dir=folders[0].parent, reports=reports)
