"""Making one step's output, packed as plain data (`Job`) so that it runs the same in this process or on another
machine that mounts the cache: check the input's digest, run the stage into a staging folder, commit the entry.

A job holds no plugin manager, reporter or open file: the stage class travels by reference (its plugin must be
installed where the job runs), the core tables it reads are resolved here, on the machine that planned the build.
"""

from __future__ import annotations

import errno
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.artifacts import Artifact, SourceModel
from slmdeploy.config.options import unstructure
from slmdeploy.errors import (
    FileSystemError,
    GateFailed,
    InputError,
    PluginError,
    SlmdeployError,
    StageError,
    brief,
    filesystem_error,
)
from slmdeploy.execute.cache import STATE_DIR, Entry, Store, output_digest
from slmdeploy.execute.records import dump_artifact
from slmdeploy.files import tree_size
from slmdeploy.plan.digests import DigestCache, source_digest
from slmdeploy.plan.steps import Step
from slmdeploy.stages import Stage, StageContext


@attrs.frozen
class StageSetup:
    """What a stage object is made from: its class and options, and the fields of its context."""

    cls: type[Stage]
    options: Any
    variant: str
    project_dir: Path
    project_name: str
    project_version: int
    tables: Mapping[str, Any]
    """The core tables the stage reads (``CONTEXT_TABLES``), resolved where the build was planned."""
    source: SourceModel
    source_digest: str
    adapter: str | None = None
    """The runtime adapter the stage applies (`StageContext.adapter`): an adapter variant's evaluators."""

    def instantiate(self, store: Store, log: Callable[[str], None], scratch: Path) -> Stage:
        context = StageContext(
            project_dir=self.project_dir,
            project_name=self.project_name,
            project_version=self.project_version,
            variant=self.variant,
            tables=dict(self.tables),
            log=log,
            scratch=scratch,
            logs_dir=store.logs_dir,
            source=self.source,
            source_digest=self.source_digest,
            adapter=self.adapter,
            shared=store.shared,
        )
        return self.cls(self.options, context)


@attrs.frozen
class Job:
    """One step to make: its key, its stage, and its input with the digest the input must have."""

    key: str
    step: Step
    setup: StageSetup
    artifact: Artifact
    digest: str
    input_entry: Path | None
    """The cache entry that holds the input; None when the input is the variant's source model."""
    state_dir: Path
    cache_root: Path

    def store(self) -> Store:
        """The project's cache, opened afresh (on another machine, the project folder itself may be absent)."""
        return Store(self.state_dir, self.cache_root)

    def verify_input(self) -> None:
        """Refuse to run on an input whose content is not the one the key was made from (a cache that differs
        between machines, or was changed during the build)."""
        digests = DigestCache()  # hash afresh: what this machine sees now
        if self.input_entry is None:
            assert isinstance(self.artifact, SourceModel)
            found = source_digest(self.artifact, digests)
        else:
            record = Store(self.state_dir, self.cache_root).get(self.input_entry.name)
            found = output_digest(self.input_entry / "out", record.record["artifact"], digests) if record else "none"
        if found != self.digest:
            raise InputError(
                f"the input of {self.step.table} ({self.step.plugin_name}) on {socket.gethostname()} has the "
                f"digest {found[:12]}, not {self.digest[:12]}",
                where=str(self.input_entry or self.artifact.path),
                fix="Every machine must see the same files at this path: check the shared file system "
                "([build] cache_dir), and that nothing changed it during the build.",
            )

    def make(self, store: Store, log: Callable[[str], None], node: str, submitted: float) -> Entry:
        """Run the stage into a staging folder and commit its output under the key; return the entry."""
        queued = max(0.0, time.time() - submitted)
        with store.staging() as staged:
            (staged / "scratch").mkdir()
            stage = self.setup.instantiate(store, log, staged / "scratch")
            started = time.monotonic()
            produced = call_stage(self.step, stage, self.artifact, staged / "out")
            record = _record(self.step, self.digest, produced, staged / "out", time.monotonic() - started)
            shutil.rmtree(staged / "scratch")
            return store.commit(staged, self.key, {**record, "node": node, "queued_s": round(queued, 3)})


def call_stage(step: Step, stage: Stage, artifact: Artifact, output_dir: Path) -> Artifact:
    name = f"{step.stage} plugin {step.plugin_name!r}"
    try:
        produced = stage.run(artifact, output_dir)
    except GateFailed:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as error:
        found = filesystem_error(error, output_dir)
        if found is not None and found.code in (errno.ENOSPC, errno.EDQUOT):
            found = FileSystemError.no_space(_lasting(Path(found.path or output_dir)), 2 * tree_size(artifact.path))
        if found is not None:
            raise FileSystemError(f"{name}: {found.what}", code=found.code, path=found.path, fix=found.fix) from error
        if isinstance(error, SlmdeployError):
            kind = type(error) if type(error).__init__ is SlmdeployError.__init__ else StageError
            raise kind(f"{name} failed: {error.what}", where=error.where, fix=error.fix) from error
        raise PluginError(
            f"{name} crashed: {brief(error)}",
            fix="This looks like a bug: run again with --debug for the traceback, and report it to the plugin's "
            "authors.",
        ) from error
    if not isinstance(produced, stage.OUTPUT):
        raise PluginError(
            f"{name} returned {produced!r}, not a {stage.OUTPUT.__name__}", fix="Report this to the plugin's authors."
        )
    return produced


def _lasting(folder: Path) -> Path:
    """The project's state folder for a staging folder (removed when the stage fails), to name in a message."""
    return next((parent for parent in (folder, *folder.parents) if parent.name == STATE_DIR), folder)


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
