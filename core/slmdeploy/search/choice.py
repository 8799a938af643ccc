"""Choosing among evaluated candidates: of those that passed their gates (the search's targets among them), the
best by the search's ``prefer``; ties go to the earlier (cheaper) candidate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from slmdeploy.candidates import PREFERENCES, QuantizeSearch


@attrs.frozen
class Measured:
    """A candidate after its evaluation: its variant's name, its figures, and whether it passed its gates."""

    name: str
    metrics: Mapping[str, Any]
    passed: bool


def choose(search: QuantizeSearch, candidates: Sequence[Measured]) -> Measured | None:
    """The passing candidate with the highest (``decode``) or lowest (``size``) figure; None when none passed."""
    figure, way = PREFERENCES[search.prefer]
    sign = -1.0 if way == "max" else 1.0
    passing = [
        (sign * value, index, candidate)
        for index, candidate in enumerate(candidates)
        if candidate.passed and (value := _number(candidate.metrics.get(figure))) is not None
    ]
    return min(passing, key=lambda item: item[:2])[2] if passing else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)
