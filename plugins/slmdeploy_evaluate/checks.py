"""The checklist's rules: domain expectations, memory growth, edge-case outcomes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from slmdeploy.plugin import ConfigError

EXPECTATIONS = ("contains", "regex", "exact", "json_schema")


def read_domain(file: Path) -> list[dict[str, Any]]:
    """The domain set: one JSON object a line, ``prompt`` and at least one expectation."""
    items = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            item = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"the domain set line is not JSON ({error})", where=where, fix=_FORMAT) from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ConfigError('a domain set line needs a string "prompt"', where=where, fix=_FORMAT)
        unknown = sorted(set(item) - {"prompt", "max_tokens", "id", *EXPECTATIONS})
        if unknown or not any(key in item for key in EXPECTATIONS):
            raise ConfigError(
                f"a domain set line has {'unknown keys ' + ', '.join(unknown) if unknown else 'no expectation'}",
                where=where,
                fix=_FORMAT,
            )
        _check_expectations(item, where)
        items.append({"id": str(item.get("id", number)), **item})
    if not items:
        raise ConfigError("the domain set is empty", where=str(file), fix=_FORMAT)
    return items


_FORMAT = (
    'Write one JSON object a line: {"prompt": "...", "contains": "..."}; expectations are contains (text or list), '
    "regex, exact and json_schema (a JSON Schema the answer must satisfy); max_tokens and id are optional."
)


def _check_expectations(item: dict[str, Any], where: str) -> None:
    contains = item.get("contains", [])
    if not isinstance(contains, (str, list)) or not all(isinstance(text, str) for text in _listed(contains)):
        raise ConfigError('"contains" must be a string or a list of strings', where=where, fix=_FORMAT)
    if "regex" in item:
        try:
            re.compile(item["regex"])
        except (re.error, TypeError) as error:
            raise ConfigError(
                f'"regex" is not a valid regular expression ({error})', where=where, fix=_FORMAT
            ) from None
    if "json_schema" in item:
        import jsonschema

        try:
            jsonschema.validators.validator_for(item["json_schema"]).check_schema(item["json_schema"])
        except jsonschema.SchemaError as error:
            raise ConfigError(
                f'"json_schema" is not a valid JSON Schema ({error.message})', where=where, fix=_FORMAT
            ) from None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def judge_answer(item: dict[str, Any], answer: str) -> list[str]:
    """What the answer got wrong; empty when it meets every expectation."""
    problems = [f"does not contain {text!r}" for text in _listed(item.get("contains", [])) if text not in answer]
    if "regex" in item and not re.search(item["regex"], answer):
        problems.append(f"does not match /{item['regex']}/")
    if "exact" in item and answer.strip() != item["exact"].strip():
        problems.append(f"is not exactly {item['exact']!r}")
    if "json_schema" in item:
        problems.extend(_schema_problems(item["json_schema"], answer))
    return problems


def _schema_problems(schema: dict[str, Any], answer: str) -> list[str]:
    import jsonschema

    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", answer.strip())
    try:
        document = json.loads(text)
    except ValueError:
        return ["is not JSON"]
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(document))
    return [] if error is None else [f"does not satisfy the JSON schema: {error.message}"]


def memory_growth(rss_mb: list[float], warmup_fraction: float = 0.1) -> dict[str, float]:
    """Least-squares slope of resident memory over the requests after the warm-up, and the growth it implies
    over those requests."""
    import numpy as np

    start = max(1, int(len(rss_mb) * warmup_fraction))
    values = np.asarray(rss_mb[start:], dtype=np.float64)
    if len(values) < 2:
        return {"slope_mb_per_request": 0.0, "growth_mb": 0.0}
    slope = float(np.polyfit(np.arange(len(values)), values, 1)[0])
    return {"slope_mb_per_request": slope, "growth_mb": slope * (len(values) - 1)}


def edge_verdict(outcome: str, expected: str | None) -> str | None:
    """Why an edge case's outcome fails, or None. `outcome`: answer, error, crash or hang."""
    if outcome in ("crash", "hang"):
        return f"the runtime {'crashed' if outcome == 'crash' else 'hung'}"
    if expected is not None and outcome != expected:
        wanted = "a clean rejection" if expected == "error" else "an answer"
        return f"expected {wanted}, got {'an answer' if outcome == 'answer' else 'an error'}"
    return None
