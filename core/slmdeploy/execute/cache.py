"""The content-addressed stage cache, file digests, and the project lock.

Layout under ``<project>/.slmdeploy/``::

    cache/<key>/entry.json   what made the entry: stage, plugin, version, options, input and output digest
    cache/<key>/out/         the artifact's files
    tmp/                     stage outputs being written; moved into cache/ only when complete
    digests.json             file digests by path, size, mtime and inode, so big weights are hashed once
    logs/                    logs stages keep for after they end (the last run of each)
    lock                     held by the build that is running

With ``[build] cache_dir``, ``cache/``, ``tmp/``, ``logs/`` and ``locks/`` live in that folder instead (a file
system every node of a cluster mounts at the same path); ``digests.json`` and the lock stay in the project.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import filelock

from slmdeploy.errors import LockBusy
from slmdeploy.plan.digests import DigestCache, sha256_text, stable_json

STATE_DIR = ".slmdeploy"


@attrs.frozen
class Entry:
    """One completed stage output in the cache."""

    folder: Path
    record: dict[str, Any]

    @property
    def out(self) -> Path:
        return self.folder / "out"

    @property
    def output_digest(self) -> str:
        return str(self.record["output_digest"])


class Store:
    """The cache of completed stage outputs, keyed by content."""

    def __init__(self, state_dir: Path, root: Path | None = None) -> None:
        self.state_dir = state_dir
        self.root = root or state_dir
        """Where entries are made and kept: the project's state folder, or ``[build] cache_dir``."""
        self.cache_dir = self.root / "cache"
        self.tmp_dir = self.root / "tmp"
        self.logs_dir = self.root / "logs"
        self.digests = DigestCache(state_dir / "digests.json")

    def get(self, key: str) -> Entry | None:
        folder = self.cache_dir / key
        try:
            record = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return Entry(folder, record)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to write an entry into; removed unless `commit` moved it into the cache."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp_dir))
        (folder / "out").mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, staged: Path, key: str, record: dict[str, Any]) -> Entry:
        """Record the staged output's digest and move it into place under `key`, atomically.

        The digest covers the output's files and the artifact's own fields (a package's model name, say), so
        every later step's key changes when either does."""
        digest = output_digest(staged / "out", record.get("artifact", {}), self.digests)
        record = {**record, "key": key, "output_digest": digest}
        (staged / "entry.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        target = self.cache_dir / key
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():  # an entry whose outside state was gone (is_current) or unreadable: replaced
            shutil.rmtree(target)
        staged.replace(target)
        return Entry(target, record)

    def shared(self, name: str, key: Mapping[str, Any], make: Callable[[Path], None]) -> Path:
        """The output folder of the shared entry `name` with `key`, made by ``make(folder)`` if missing.

        Stages running side by side that ask for the same entry wait for the first to make it."""
        digest = sha256_text(stable_json({"shared": name, "key": dict(key)}))
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(self.root / "locks" / f"{digest}.lock"):
            entry = self.get(digest)
            if entry is None:
                with self.staging() as staged:
                    make(staged / "out")
                    entry = self.commit(staged, digest, {"stage": "shared", "name": name, "shared_key": dict(key)})
            return entry.out

    def remove_stale_tmp(self) -> None:
        """Throw away what an interrupted build left half-written. Call with the lock held."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def entries(self) -> list[Entry]:
        found = (self.get(folder.name) for folder in sorted(self.cache_dir.glob("*")))
        return [entry for entry in found if entry is not None]


def output_digest(out: Path, artifact: Mapping[str, Any], digests: DigestCache) -> str:
    """The digest of an entry's output: its files, and the artifact's own fields (all but its path)."""
    files = digests.tree_digest(out, remember=False)
    fields = {name: value for name, value in artifact.items() if name != "path"}
    return sha256_text(files + stable_json(fields))


@contextlib.contextmanager
def project_lock(state_dir: Path, notify: Any) -> Iterator[None]:
    """Serialize builds in one project. `notify` is told when we have to wait for another process."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(state_dir / "lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        notify(f"waiting for another slmdeploy process working in {state_dir.parent} to finish...")
        try:
            lock.acquire(timeout=float(os.environ.get("SLMDEPLOY_LOCK_TIMEOUT", "3600")))
        except filelock.Timeout:
            raise LockBusy(
                "another slmdeploy process still holds the project lock",
                where=str(state_dir / "lock"),
                fix="Wait for it to finish, or stop it; the lock is released when that process exits.",
            ) from None
    try:
        yield
    finally:
        lock.release()
