"""The ``build/`` folder: each variant's final artifacts (hard links into the cache) and its manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slmdeploy import __version__
from slmdeploy.artifacts import adapter_variant, runtime_adapters
from slmdeploy.execute.records import inside
from slmdeploy.files import link_tree

if TYPE_CHECKING:
    from slmdeploy.execute.results import StepResult
    from slmdeploy.plan.steps import Plan

BUILD_DIR = "build"
MANIFEST = "manifest.json"
REPORT = "report.json"


def publish(
    plan: Plan, variant: str, results: Sequence[StepResult], evaluation: dict[str, Any] | None = None
) -> tuple[Path, bool]:
    """Lay out ``build/<variant>/`` from the cache, with ``report.json`` when evaluators ran; unchanged when its
    manifest has the same keys and the gates the same verdicts."""
    build = plan.project.root / BUILD_DIR
    folder = build / variant
    planned = next(planned for planned in plan.variants if planned.name == variant)
    record = manifest(plan, variant, results)
    report = _report(record, evaluation)
    unchanged = _manifest_keys(folder / MANIFEST) == [stage["key"] for stage in record["stages"]]
    if unchanged and _gates_of(folder / REPORT) == (report or {}).get("gates"):
        return folder, False
    build.mkdir(exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=build))
    try:
        # a runtime adapter's variant: its manifest and report; its files are its base variant's
        for result in () if planned.adapter else results:
            publish_as = type(result.artifact).PUBLISH_AS
            if publish_as is not None and inside(result.artifact.path, result.entry.out):
                target = staged / publish_as
                if publish_as != ".":
                    shutil.rmtree(target, ignore_errors=True)
                link_tree(result.artifact.path, target)
        (staged / MANIFEST).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        if report is not None:
            (staged / REPORT).unlink(missing_ok=True)  # never write through a hard link into the cache
            (staged / REPORT).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        _swap_in(staged, folder)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return folder, True


def manifest(plan: Plan, variant: str, results: Sequence[StepResult]) -> dict[str, Any]:
    project = plan.project
    planned = next(planned for planned in plan.variants if planned.name == variant)
    source, digest = planned.evaluated_source()
    described = {"path": str(source.path), "digest": digest}
    if planned.adapter:
        shared = {"adapter": planned.adapter, "base": planned.base}
    else:
        shared = _adapter_variants(variant, results)
    return {
        "project": project.project.name,
        "version": project.project.version,
        "variant": variant,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "slmdeploy_version": __version__,
        "source": {**described, "adapter": str(source.adapter)} if source.adapter else described,
        "stages": [_manifest_stage(result) for result in results],
        **shared,
    }


def _adapter_variants(variant: str, results: Sequence[StepResult]) -> dict[str, Any]:
    """``{"adapters": [...]}`` when the variant's model takes runtime LoRA adapters: each is a variant of its own,
    ``<adapter>-<variant>``, sharing this variant's files (`slmdeploy.deploy.listing` lists them)."""
    folders = [result.artifact.path for result in results if type(result.artifact).PUBLISH_AS == "model"]
    found = runtime_adapters(folders[-1]) if folders else {}
    if not found:
        return {}
    listed = [{"name": name, "variant": adapter_variant(name, variant), **item} for name, item in found.items()]
    return {"adapters": listed}


def _report(record: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    registration = next((stage["artifact"] for stage in record["stages"] if stage["stage"] == "register"), None)
    keep = ("project", "version", "variant", "built_at", "slmdeploy_version", "source")
    return {
        **{name: record[name] for name in keep},
        **evaluation,
        "registered": (registration or {}).get("model_id"),
    }


def _gates_of(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))["gates"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _manifest_stage(result: StepResult) -> dict[str, Any]:
    record = result.entry.record
    keep = (
        "stage",
        "table",
        "plugin",
        "plugin_version",
        "provided_by",
        "options",
        "input_digest",
        "duration_s",
        "queued_s",
        "node",
        "created",
        "output_digest",
        "artifact",
    )
    return {"key": result.key, "cached": result.cached, **{name: record.get(name) for name in keep}}


def _manifest_keys(file: Path) -> list[str] | None:
    try:
        return [stage["key"] for stage in json.loads(file.read_text(encoding="utf-8"))["stages"]]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _swap_in(staged: Path, folder: Path) -> None:
    old = folder.with_name(f".{folder.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.replace(old)
    staged.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
