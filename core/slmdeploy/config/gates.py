"""Build gates: thresholds in ``[evaluate.gates]`` on the figures evaluators measure, and the fallback chain.

Evaluators declare the figures they measure in `Evaluator.METRICS`; ``[evaluate.gates]`` bounds them with
``min_<metric>`` and ``max_<metric>`` keys. Gates are judged by the core after a variant's evaluators ran, and
are not part of any cache key: changing a threshold re-judges the cached measurements without measuring again.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from slmdeploy.errors import ConfigError

if TYPE_CHECKING:
    from slmdeploy.config.project import Project

BOUNDS = ("min", "max")


@attrs.frozen
class Metric:
    """A figure an evaluator measures, which ``[evaluate.gates]`` can bound."""

    description: str
    unit: str = ""
    higher_is_better: bool = True


@attrs.frozen
class Gate:
    metric: str
    bound: str
    """``min`` (the figure must be at least the threshold) or ``max`` (at most)."""
    threshold: float

    @property
    def key(self) -> str:
        return f"{self.bound}_{self.metric}"


@attrs.frozen
class GateResult:
    gate: Gate
    measured: float | None
    """None when no evaluator reported the figure (a failed gate)."""
    unit: str = ""

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


def parse_gates(project: Project, table: Mapping[str, Any], metrics: Mapping[str, Metric]) -> tuple[Gate, ...]:
    """The gates of ``[evaluate.gates]``, checked against the metrics the selected evaluators measure."""
    if not isinstance(table, Mapping):
        raise ConfigError(
            "[evaluate] gates must be a table",
            where=project.locate("evaluate.gates"),
            fix="Write it as [evaluate.gates].",
        )
    gates = []
    for key, value in table.items():
        bound, _, metric = key.partition("_")
        where = project.locate(f"evaluate.gates.{key}")
        if bound not in BOUNDS or metric not in metrics:
            valid = [f"{b}_{name}" for name in metrics for b in BOUNDS]
            nearest = difflib.get_close_matches(key, valid, n=1)
            hint = f"Did you mean {nearest[0]!r}? " if nearest else ""
            raise ConfigError(
                f"[evaluate.gates] {key} names no figure the selected evaluators measure",
                where=where,
                fix=f"{hint}Gates are min_<figure> or max_<figure>; the figures: "
                + (", ".join(f"{name} ({metric.description})" for name, metric in metrics.items()) or "none")
                + ".",
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"[evaluate.gates] {key} must be a number, not {value!r}",
                where=where,
                fix=f"Give the threshold of {metric} in {metrics[metric].unit or 'its unit'}.",
            )
        gates.append(Gate(metric, bound, float(value)))
    return tuple(gates)


def judge(gates: Sequence[Gate], measured: Mapping[str, Any], metrics: Mapping[str, Metric]) -> list[GateResult]:
    results = []
    for gate in gates:
        value = measured.get(gate.metric)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        results.append(GateResult(gate, number, metrics[gate.metric].unit if gate.metric in metrics else ""))
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


def parse_fallback(project: Project, value: Any, variants: Sequence[str]) -> tuple[str, ...]:
    """``[evaluate] fallback``: variant names in order of preference; each is built only if the one before it
    failed a gate."""
    where = project.locate("evaluate.fallback")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value) or len(value) < 2:
        raise ConfigError(
            f"[evaluate] fallback must list two or more variant names, not {value!r}",
            where=where,
            fix=f'For example fallback = ["int4", "int8"]. The variants of this project: {", ".join(variants)}.',
        )
    unknown = [name for name in value if name not in variants]
    if unknown or len(set(value)) != len(value):
        raise ConfigError(
            f"[evaluate] fallback names {', '.join(map(repr, unknown)) or 'a variant twice'}: each entry must be a "
            "variant this project builds, once",
            where=where,
            fix=f"The variants of this project: {', '.join(variants)} (list the precisions in [quantize] precision).",
        )
    return tuple(value)
