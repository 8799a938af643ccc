"""``[quantize] search``: the quantizer's candidate settings as alternative steps (one variant each, cheapest
first), and the search's targets as gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from slmdeploy.candidates import PREFERENCES, TARGETS, Candidate, QuantizeSearch
from slmdeploy.config.gates import Gate
from slmdeploy.config.options import fields_of
from slmdeploy.config.project import Project
from slmdeploy.errors import ConfigError, plugin_code
from slmdeploy.host.registry import Provided, Registry
from slmdeploy.plan.digests import DigestCache
from slmdeploy.plan.steps import Step
from slmdeploy.plan.variants import alternatives
from slmdeploy.stages import Metric

WHERE = "quantize.search"


def candidate_steps(
    project: Project,
    registry: Registry,
    provided: Provided,
    table: Mapping[str, Any],
    search: QuantizeSearch,
    digests: DigestCache,
) -> list[Step]:
    """One quantize step per candidate the quantizer's plugin proposes (or the ones `search.candidates` names)."""
    _refuse_lists(project, provided, table)
    name = provided.cls.PLUGIN_NAME
    with plugin_code(f"the slmdeploy_quantize_candidates hook for quantizer {name!r}"):
        proposed = registry.manager.hook.slmdeploy_quantize_candidates(quantizer=name, table=table, search=search)
    candidates = _selected(project, name, list(proposed or []), search.candidates)
    steps = []
    for candidate in candidates:
        (step,) = alternatives(project, "quantize", "quantize", provided, {**table, **candidate.options}, digests)
        steps.append(attrs.evolve(step, label=candidate.name, note=candidate.note))
    return steps


def _refuse_lists(project: Project, provided: Provided, table: Mapping[str, Any]) -> None:
    for field in fields_of(provided.cls.Options):
        if field.metadata.get("variants") and isinstance(table.get(field.name), list):
            raise ConfigError(
                f"[quantize] {field.name} is a list, but a search chooses among its own candidates",
                where=project.locate(f"quantize.{field.name}"),
                fix=f"Give one {field.name} (the candidates' starting point), or leave out search.",
            )


def _selected(project: Project, quantizer: str, proposed: list[Candidate], wanted: Sequence[str]) -> list[Candidate]:
    names = [candidate.name for candidate in proposed]
    if not proposed:
        raise ConfigError(
            f"the quantizer {quantizer!r} proposes no candidates for a search",
            where=project.locate(WHERE),
            fix="Leave out search, or use a quantizer whose plugin implements slmdeploy_quantize_candidates.",
        )
    unknown = [name for name in wanted if name not in names]
    if unknown or len(set(wanted)) != len(wanted):
        raise ConfigError(
            f"[quantize] search candidates names {', '.join(map(repr, unknown)) or 'a candidate twice'}",
            where=project.locate(WHERE),
            fix=f"The candidates of {quantizer!r}, cheapest first: {', '.join(names)}.",
        )
    return [candidate for candidate in proposed if not wanted or candidate.name in wanted]


def search_gates(project: Project, search: QuantizeSearch, metrics: Mapping[str, Metric]) -> tuple[Gate, ...]:
    """The search's targets as gates; the figures they and ``prefer`` need must be measured by an evaluator."""
    needed = {key: TARGETS[key] for key in TARGETS if getattr(search, key) is not None}
    figure = PREFERENCES[search.prefer][0]
    missing = [name for name, _ in [*needed.values(), (figure, "")] if name not in metrics]
    if missing:
        raise ConfigError(
            f"[quantize] search needs the figures {', '.join(missing)}, which no selected evaluator measures",
            where=project.locate(WHERE),
            fix='Select the evaluators: [evaluate] plugins = ["benchmark", "quality"] (top1_agreement is quality\'s; '
            "size_mb and decode_tokens_per_s are benchmark's).",
        )
    return tuple(Gate(metric, bound, float(getattr(search, key))) for key, (metric, bound) in needed.items())
