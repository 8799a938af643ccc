"""Running a plan: each step's output is looked up in the cache by its key, or made and committed."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import cattrs

from slmdeploy import __version__
from slmdeploy.artifacts import Artifact, EvaluationReport, ModelInfo
from slmdeploy.cache import Entry, Store
from slmdeploy.errors import GateFailed, PluginError, SlmdeployError, StageError
from slmdeploy.manager import Registry
from slmdeploy.options import unstructure
from slmdeploy.planning import Plan, Step, Variant, _alternatives
from slmdeploy.progress import Reporter
from slmdeploy.stages import Stage, StageContext

BUILD_DIR = "build"
artifacts = cattrs.Converter()
artifacts.register_unstructure_hook(Path, str)
artifacts.register_structure_hook(Path, lambda value, _: Path(value))
MANIFEST = "manifest.json"


@attrs.define
class StepResult:
    step: Step
    key: str
    entry: Entry
    artifact: Artifact
    cached: bool


@attrs.define
class _Position:
    """Where one variant is in the build: the artifact its next step takes."""

    variant: Variant
    artifact: Artifact
    digest: str
    results: list[StepResult] = attrs.field(factory=list)

    def advance(self, result: StepResult) -> None:
        self.results.append(result)
        if isinstance(result.artifact, EvaluationReport):
            _check_gate(result.step, result.artifact)
        else:
            self.artifact, self.digest = result.artifact, result.entry.output_digest


@attrs.define
class VariantResult:
    variant: Variant
    results: list[StepResult]
    folder: Path
    published: bool


class Pipeline:
    """Builds the variants of a plan into the project's cache and ``build/`` folder."""

    def __init__(self, plan: Plan, registry: Registry, store: Store, reporter: Reporter, jobs: int = 1) -> None:
        self.plan = plan
        self.registry = registry
        self.store = store
        self.reporter = reporter
        self.jobs = max(1, jobs)
        self.context_tables = plan.context_tables()

    def build(self) -> list[VariantResult]:
        """Run every variant's steps, level by level: a step several variants share runs once, and the
        distinct steps of one level run side by side when `jobs` and free memory allow."""
        states = [_Position(variant, self.plan.source, self.plan.source_digest) for variant in self.plan.variants]
        for level in range(max(len(variant.steps) for variant in self.plan.variants)):
            groups: dict[str, list[tuple[_Position, Step]]] = {}
            for state in states:
                if level < len(state.variant.steps):
                    step = self._resolve(state.variant.steps[level], state.artifact)
                    groups.setdefault(step.key(state.digest, self.context_tables), []).append((state, step))
            outcomes = self._run_level(groups)
            for key, members in groups.items():
                for index, (state, step) in enumerate(members):
                    shared = attrs.evolve(outcomes[key], step=step, cached=outcomes[key].cached or index > 0)
                    state.advance(shared)
        self.store.digests.save()
        return [
            VariantResult(state.variant, state.results, *self._publish(state.variant, state.results))
            for state in states
        ]

    def _run_level(self, groups: dict[str, list[tuple[_Position, Step]]]) -> dict[str, StepResult]:
        tasks = {
            key: (members[0][1], members[0][0], ", ".join(m[0].variant.name for m in members))
            for key, members in groups.items()
        }
        parallel = min(self.jobs, len(tasks))
        if parallel > 1 and not _fits_in_memory(state.artifact for _, state, _ in tasks.values()):
            parallel = 1
        if parallel == 1:
            return {key: self._run_step(key, *task) for key, task in tasks.items()}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="stage") as pool:
            futures = {key: pool.submit(self._run_step, key, *task) for key, task in tasks.items()}
            wait(futures.values())
        return {key: future.result() for key, future in futures.items()}

    def _resolve(self, step: Step, artifact: Artifact) -> Step:
        """Pick the template family for ``family = "auto"`` now that the model folder exists."""
        if step.provided is not None:
            return step
        name = self.registry.manager.hook.slmdeploy_template_family(model=ModelInfo.from_dir(artifact.path))
        provided = self.registry.get("template", name)
        if provided is None:
            raise PluginError(
                f"template dispatch chose {name!r}, which no plugin registers",
                fix=f"Installed families: {', '.join(self.registry.names('template'))}.",
            )
        project = self.plan.project
        (resolved,) = _alternatives(project, "template", "template", provided, step.raw, self.store.digests)
        return resolved

    def _run_step(self, key: str, step: Step, state: _Position, variants: str) -> StepResult:
        variant, artifact, digest = state.variant, state.artifact, state.digest
        label = f"{variants}: {step.table} ({step.plugin_name})"
        entry = self.store.get(key)
        if entry is not None:
            cached_artifact = load_artifact(entry, step.provided.cls.OUTPUT)  # type: ignore[union-attr]
            stage = self._instantiate(variant, step, self.reporter.log, self.store.tmp_dir)
            if stage.is_current(cached_artifact):
                self.reporter.cached(label, entry.record.get("duration_s", 0.0))
                return StepResult(step, key, entry, cached_artifact, cached=True)
        with self.reporter.running(label) as log, self.store.staging() as staged:
            (staged / "scratch").mkdir()
            stage = self._instantiate(variant, step, log, staged / "scratch")
            started = time.monotonic()
            produced = _call_stage(step, stage, artifact, staged / "out")
            record = _record(step, digest, produced, staged / "out", time.monotonic() - started)
            shutil.rmtree(staged / "scratch")
            entry = self.store.commit(staged, key, record)
        return StepResult(step, key, entry, load_artifact(entry, stage.OUTPUT), cached=False)

    def _instantiate(self, variant: Variant, step: Step, log: Callable[[str], None], scratch: Path) -> Stage:
        assert step.provided is not None
        project = self.plan.project
        cls = step.provided.cls
        context = StageContext(
            project_dir=project.root,
            project_name=project.project.name,
            project_version=project.project.version,
            variant=variant.name,
            tables={name: self.context_tables[name] for name in cls.CONTEXT_TABLES},
            log=log,
            scratch=scratch,
            logs_dir=self.store.state_dir / "logs",
        )
        return cls(step.options, context)

    def _publish(self, variant: Variant, results: list[StepResult]) -> tuple[Path, bool]:
        """Lay out ``build/<variant>/`` from the cache; unchanged when its manifest has the same keys."""
        build = self.plan.project.root / BUILD_DIR
        folder = build / variant.name
        manifest = self._manifest(variant, results)
        if _manifest_keys(folder / MANIFEST) == [stage["key"] for stage in manifest["stages"]]:
            return folder, False
        build.mkdir(exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{variant.name}-", dir=build))
        try:
            for result in results:
                publish_as = type(result.artifact).PUBLISH_AS
                if publish_as is not None and _inside(result.artifact.path, result.entry.out):
                    target = staged / publish_as
                    if publish_as != ".":
                        shutil.rmtree(target, ignore_errors=True)
                    _link_tree(result.artifact.path, target)
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            _swap_in(staged, folder)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return folder, True

    def _manifest(self, variant: Variant, results: list[StepResult]) -> dict[str, Any]:
        project = self.plan.project
        return {
            "project": project.project.name,
            "version": project.project.version,
            "variant": variant.name,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "slmdeploy_version": __version__,
            "source": {"path": str(self.plan.source.path), "digest": self.plan.source_digest},
            "stages": [_manifest_stage(result) for result in results],
        }


def _fits_in_memory(inputs: Iterable[Artifact]) -> bool:
    """Run stages side by side only while about three times their inputs fit in free memory (conversion and
    quantization hold their input, their output, and working copies)."""
    import psutil

    needed = 3 * sum(_size(Path(artifact.path)) for artifact in inputs)
    return bool(needed < psutil.virtual_memory().available)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _call_stage(step: Step, stage: Stage, artifact: Artifact, output_dir: Path) -> Artifact:
    name = f"{step.stage} plugin {step.plugin_name!r}"
    try:
        produced = stage.run(artifact, output_dir)
    except GateFailed:
        raise
    except SlmdeployError as error:
        kind = type(error) if type(error).__init__ is SlmdeployError.__init__ else StageError
        raise kind(f"{name} failed: {error.what}", where=error.where, fix=error.fix) from error
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as error:
        raise PluginError(
            f"{name} crashed: {error!r}",
            fix="Run again with --debug for the traceback, and report it to the plugin's authors.",
        ) from error
    if not isinstance(produced, stage.OUTPUT):
        raise PluginError(
            f"{name} returned {produced!r}, not a {stage.OUTPUT.__name__}", fix="Report this to the plugin's authors."
        )
    return produced


def _check_gate(step: Step, report: EvaluationReport) -> None:
    if not report.passed:
        failed = report.summary.get("failed", "a gate")
        raise GateFailed(
            f"evaluation {step.plugin_name!r} failed: {failed}",
            fix=f"See {report.path} for the figures, or relax the thresholds in [{step.table}].",
        )


def _record(step: Step, input_digest: str, artifact: Artifact, out: Path, duration: float) -> dict[str, Any]:
    assert step.provided is not None
    cls = type(artifact)
    return {
        "stage": step.stage,
        "table": step.table,
        "plugin": step.plugin_name,
        "plugin_version": step.provided.version,
        "provided_by": step.provided.origin,
        "options": unstructure(step.options),
        "input_digest": input_digest,
        "duration_s": round(duration, 3),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact_type": f"{cls.__module__}:{cls.__qualname__}",
        "artifact": dump_artifact(artifact, out),
    }


def dump_artifact(artifact: Artifact, out: Path) -> dict[str, Any]:
    data = artifacts.unstructure(artifact)
    data["path"] = _relative_or_absolute(Path(artifact.path), out)
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain


def load_artifact(entry: Entry, expected: type[Artifact]) -> Artifact:
    """Rebuild a cached artifact, as the class the plugin returned when it is importable."""
    cls = _import_class(entry.record.get("artifact_type", "")) or expected
    data = dict(entry.record["artifact"])
    path = data.pop("path")
    data["path"] = entry.out / path[len("out:") :] if path.startswith("out:") else Path(path)
    return artifacts.structure(data, cls)


def _import_class(qualified: str) -> type[Artifact] | None:
    module, _, name = qualified.partition(":")
    with contextlib.suppress(ImportError, AttributeError, ValueError):
        found = getattr(importlib.import_module(module), name)
        if isinstance(found, type) and issubclass(found, Artifact):
            return found
    return None


def _relative_or_absolute(path: Path, out: Path) -> str:
    return f"out:{path.resolve().relative_to(out.resolve()).as_posix()}" if _inside(path, out) else str(path.resolve())


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


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


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link a cached tree into place (copies across file systems); cache files are never edited."""
    link: Callable[[str, str], object] = _hardlink_or_copy
    shutil.copytree(source, target, copy_function=link, dirs_exist_ok=True)


def _hardlink_or_copy(source: str, target: str) -> object:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _swap_in(staged: Path, folder: Path) -> None:
    old = folder.with_name(f".{folder.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.replace(old)
    staged.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def preview(pipeline: Pipeline, variant: Variant) -> list[dict[str, Any]]:
    """What `build` would do for a variant: each step cached, to run, or waiting on an earlier step."""
    artifact: Artifact | None = pipeline.plan.source
    digest: str | None = pipeline.plan.source_digest
    rows = []
    for planned in variant.steps:
        step = pipeline._resolve(planned, artifact) if artifact is not None else planned
        row = {"stage": step.stage, "table": step.table, "plugin": step.plugin_name, "status": "run", "key": None}
        rows.append(row)
        if digest is None or step.provided is None:
            continue
        row["key"] = key = step.key(digest, pipeline.context_tables)
        entry = pipeline.store.get(key)
        if entry is None:
            artifact = digest = None
            continue
        cached = load_artifact(entry, step.provided.cls.OUTPUT)
        row["status"] = "cached"
        if not isinstance(cached, EvaluationReport):
            artifact, digest = cached, entry.output_digest
    return rows


def unregister_all(pipeline: Pipeline) -> list[str]:
    """Ask each registrar to undo the registrations found in the cache; report what was removed."""
    from slmdeploy.options import structure_table

    lines = []
    for entry in pipeline.store.entries():
        if entry.record.get("stage") != "register":
            continue
        provided = pipeline.registry.get("register", entry.record["plugin"])
        if provided is None:
            lines.append(
                f"skipped {entry.record['artifact'].get('model_id')}: plugin {entry.record['plugin']!r} is "
                "not installed"
            )
            continue
        options = structure_table(provided.cls.Options, entry.record["options"], "register", lambda key: key)
        step = Step("register", "register", provided, options, entry.record["options"], {})
        variant = Variant(entry.record.get("variant", "default"), (step,))
        registrar = pipeline._instantiate(variant, step, pipeline.reporter.log, pipeline.store.tmp_dir)
        lines.append(registrar.unregister(load_artifact(entry, provided.cls.OUTPUT)))  # type: ignore[attr-defined]
    return lines
