"""After a variant's evaluators ran: its gates judged, the error that stops it (a failed gate or evaluator),
what its ``report.json`` says, and the report plugins that write what people read."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from slmdeploy.artifacts import EvaluationReport
from slmdeploy.config.gates import Gate
from slmdeploy.errors import GateFailed, SlmdeployError, plugin_code
from slmdeploy.execute.publish import REPORT
from slmdeploy.stages import Metric

if TYPE_CHECKING:
    import pluggy

    from slmdeploy.plan.steps import Plan


@attrs.frozen
class GateResult:
    gate: Gate
    measured: float | None
    """None when no evaluator reported the figure (a failed gate)."""
    unit: str = ""
    depends_on_machine: bool = False

    @property
    def passed(self) -> bool:
        if self.measured is None or math.isnan(self.measured):
            return False
        if self.gate.bound == "min":
            return self.measured >= self.gate.threshold
        return self.measured <= self.gate.threshold

    def as_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate.key,
            "metric": self.gate.metric,
            "bound": self.gate.bound,
            "threshold": self.gate.threshold,
            "measured": self.measured,
            "unit": self.unit,
            "passed": self.passed,
        }


def judge(
    gates: Sequence[Gate], measured: Mapping[str, Any], metrics: Mapping[str, Metric], *, adapter: bool = False
) -> list[GateResult]:
    """Each gate against its figure; an `adapter_only` figure's gate only when `adapter` (a runtime adapter's
    variant): a base variant does not measure it."""
    results = []
    for gate in gates:
        metric = metrics.get(gate.metric, Metric(gate.metric))
        if metric.adapter_only and not adapter:
            continue
        value = measured.get(gate.metric)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        results.append(GateResult(gate, number, metric.unit, metric.depends_on_machine))
    return results


def gate_table(results: Sequence[GateResult]) -> str:
    """A plain-text table: gate, measured value, threshold, verdict."""
    rows = [("gate", "measured", "threshold", "")]
    for result in results:
        measured = "not measured" if result.measured is None else f"{_number(result.measured)} {result.unit}".strip()
        sign = ">=" if result.gate.bound == "min" else "<="
        threshold = f"{sign} {_number(result.gate.threshold)} {result.unit}".strip()
        rows.append((result.gate.key, measured, threshold, "ok" if result.passed else "FAILED"))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


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
        fix=(
            f"Falling back to {following[0]}; the figures: {figures}."
            if following
            else 'Relax the thresholds in [evaluate.gates], build a higher precision (fallback = ["int4", "int8", '
            f'"fp32"]), or improve the model. The figures: {figures}.'
        )
        + _machine_note(failed),
        details=textwrap.indent(gate_table(gates), "  "),
    )


def _machine_note(failed: Sequence[GateResult]) -> str:
    absolute = [result.gate.key for result in failed if result.depends_on_machine]
    if not absolute:
        return ""
    return (
        f" {', '.join(absolute)} {'bounds a figure' if len(absolute) == 1 else 'bound figures'} that depend on the "
        "machine running the build (its cores, clock and load), so the same package passes on one machine and fails "
        "on another; a ratio to the source model measured in the same run holds anywhere (min_decode_speedup, "
        "min_prefill_speedup, max_ttft_ratio)."
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
