"""Build gates: thresholds in ``[evaluate.gates]`` on the figures evaluators measure, and the fallback chain.

Evaluators declare the figures they measure in `Evaluator.METRICS`; ``[evaluate.gates]`` bounds them with
``min_<metric>`` and ``max_<metric>`` keys. Gates are judged by the core after a variant's evaluators ran
(`slmdeploy.execute.verdicts`), and are not part of any cache key: changing a threshold re-judges the cached
measurements without measuring again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from slmdeploy.errors import ConfigError
from slmdeploy.stages import Metric

if TYPE_CHECKING:
    from slmdeploy.config.project import Project

BOUNDS = ("min", "max")


@attrs.frozen
class Gate:
    metric: str
    bound: str
    """``min`` (the figure must be at least the threshold) or ``max`` (at most)."""
    threshold: float

    @property
    def key(self) -> str:
        return f"{self.bound}_{self.metric}"


def parse_gates(project: Project, table: Any) -> tuple[Gate, ...]:
    """The thresholds of ``[evaluate.gates]``, each a number under a ``min_<figure>`` or ``max_<figure>`` key.
    Whether the figure is one the selected evaluators measure is checked when the plan is made (`check_figures`)."""
    if not isinstance(table, Mapping):
        raise ConfigError(
            "[evaluate] gates must be a table",
            where=project.locate("evaluate.gates"),
            fix="Write it as [evaluate.gates].",
        )
    gates = []
    for key, value in table.items():
        bound, _, metric = key.partition("_")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"[evaluate.gates] {key} must be a number, not {value!r}",
                where=project.locate(f"evaluate.gates.{key}"),
                fix=f"Give the threshold of {metric or key} in its unit (`slmdeploy plugins` lists the figures).",
            )
        gates.append(Gate(metric, bound, float(value)))
    return tuple(gates)


def check_figures(project: Project, gates: Sequence[Gate], metrics: Mapping[str, Metric]) -> None:
    """Every gate bounds a figure the selected evaluators measure (known once the plugins are loaded)."""
    for gate in gates:
        if gate.bound in BOUNDS and gate.metric in metrics:
            continue
        valid = [f"{b}_{name}" for name in metrics for b in BOUNDS]
        nearest = difflib.get_close_matches(gate.key, valid, n=1)
        hint = f"Did you mean {nearest[0]!r}? " if nearest else ""
        raise ConfigError(
            f"[evaluate.gates] {gate.key} names no figure the selected evaluators measure",
            where=project.locate(f"evaluate.gates.{gate.key}"),
            fix=f"{hint}Gates are min_<figure> or max_<figure>; the figures: "
            + (", ".join(f"{name} ({metric.description})" for name, metric in metrics.items()) or "none")
            + ".",
        )


def parse_fallback(project: Project, value: Any) -> tuple[str, ...]:
    """``[evaluate] fallback``: variant names in order of preference; each is built only if the one before it
    failed a gate. Whether each names a variant is checked when the plan is made (`check_fallback_variants`)."""
    where = project.locate("evaluate.fallback")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value) or len(value) < 2:
        raise ConfigError(
            f"[evaluate] fallback must list two or more variant names, not {value!r}",
            where=where,
            fix='For example fallback = ["int4", "int8"] (`slmdeploy plan` lists the variants of this project).',
        )
    if len(set(value)) != len(value):
        raise ConfigError(
            "[evaluate] fallback names a variant twice: each entry must be a variant this project builds, once",
            where=where,
            fix="Remove the repeated name.",
        )
    return tuple(value)


def check_fallback_variants(project: Project, fallback: Sequence[str], variants: Sequence[str]) -> None:
    unknown = [name for name in fallback if name not in variants]
    if unknown:
        raise ConfigError(
            f"[evaluate] fallback names {', '.join(map(repr, unknown))}: each entry must be a variant this project "
            "builds, once",
            where=project.locate("evaluate.fallback"),
            fix=f"The variants of this project: {', '.join(variants)} (list the precisions in [quantize] precision).",
        )
