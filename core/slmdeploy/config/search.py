"""``[quantize] search``: its table checked where it enters, into a `QuantizeSearch`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slmdeploy.candidates import PREFERENCES, TARGETS, QuantizeSearch
from slmdeploy.errors import ConfigError

if TYPE_CHECKING:
    from slmdeploy.config.project import Project

KEY = "quantize.search"
EXAMPLE = 'For example search = { min_top1 = 0.9, max_size_mb = 120, prefer = "decode" }.'


def parse_search(project: Project, value: Any) -> QuantizeSearch:
    where = project.locate(KEY)
    if not isinstance(value, Mapping):
        raise ConfigError(f"[quantize] search must be a table, not {value!r}", where=where, fix=EXAMPLE)
    known = {*TARGETS, "prefer", "candidates"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"[quantize] search has no key {unknown[0]!r}",
            where=where,
            fix=f"Its keys: {', '.join(sorted(known))}. {EXAMPLE}",
        )
    targets = {}
    for key in TARGETS:
        number = value.get(key)
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0):
            message = f"[quantize] search {key} must be a number above 0, not {number!r}"
            raise ConfigError(message, where=where, fix=EXAMPLE)
        targets[key] = None if number is None else float(number)
    if not any(number is not None for number in targets.values()):
        raise ConfigError(
            "[quantize] search has no target", where=where, fix=f"Give min_top1, max_size_mb or both. {EXAMPLE}"
        )
    prefer = value.get("prefer", "decode")
    if prefer not in PREFERENCES:
        raise ConfigError(
            f"[quantize] search prefer must be one of {', '.join(map(repr, PREFERENCES))}, not {prefer!r}",
            where=where,
            fix="decode: the fastest candidate that meets the targets; size: the smallest.",
        )
    names = value.get("candidates", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(
            f"[quantize] search candidates must be a list of candidate names, not {names!r}",
            where=where,
            fix="`slmdeploy plan` lists the candidates; leave candidates out to try them all.",
        )
    return QuantizeSearch(targets["min_top1"], targets["max_size_mb"], prefer, tuple(names))
