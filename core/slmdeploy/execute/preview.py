"""``slmdeploy plan``: what `build` would do for each step, found the way `build` finds it."""

from __future__ import annotations

from typing import Any

from slmdeploy.artifacts import Artifact, EvaluationReport
from slmdeploy.execute.runner import StepRunner
from slmdeploy.plan.steps import Variant

CHANGED_OUTSIDE = "cached, but changed outside the cache: build makes it again"


def preview(runner: StepRunner, variant: Variant) -> list[dict[str, Any]]:
    """What `build` would do for a variant: each step cached, to run, or waiting on an earlier step. A cached
    output its stage no longer finds current (a registration removed outside) is run again, as `build` does. A
    template step with ``family = "auto"`` whose input is not built yet names the family it will pick (`family`)."""
    artifact: Artifact | None = variant.source
    digest: str | None = variant.source_digest
    rows = []
    for planned in variant.steps:
        step = runner.resolve(planned, artifact) if artifact is not None else planned
        row = {"stage": step.stage, "table": step.table, "plugin": step.plugin_name, "status": "run", "key": None}
        if step.provided is None and variant.source.path.is_dir():
            # The converted folder keeps the source's config and tokenizer, so dispatch on the source picks the
            # family the build will pick.
            row["family"] = runner.dispatch_template(variant.source)
        rows.append(row)
        if digest is None or step.provided is None:
            continue
        row["key"] = key = runner.key(step, digest, variant)
        found = runner.cached(key, step, variant)
        if found is None or not found.current:
            if found is not None:
                row["note"] = CHANGED_OUTSIDE
            artifact = digest = None
            continue
        row["status"] = "cached"
        if not isinstance(found.artifact, EvaluationReport):
            artifact, digest = found.artifact, found.entry.output_digest
    return rows
