"""Content digests: what a step's key and a cache entry's output digest are made of.

File digests are remembered in ``.slmdeploy/digests.json`` by path, size, mtime and inode, so big weights are
hashed once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slmdeploy.artifacts import SourceModel

CHUNK = 4 << 20


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stable_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


class DigestCache:
    """sha256 of files, remembered by (size, mtime, inode) so unchanged weights are not read again."""

    def __init__(self, file: Path | None = None) -> None:
        """`file` None: remember nothing beyond this object (every file is hashed afresh once)."""
        self.file = file
        self._known: dict[str, list[Any]] = {}
        self._dirty = False
        self._lock = threading.Lock()  # stages of one level run in threads
        with contextlib.suppress(FileNotFoundError, ValueError):
            if file is not None:
                self._known = json.loads(file.read_text(encoding="utf-8"))

    def file_digest(self, path: Path, remember: bool = True) -> str:
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        with self._lock:
            known = self._known.get(str(path))
        if known and known[:3] == signature:
            return str(known[3])
        digest = _hash_file(path)
        if remember:
            with self._lock:
                self._known[str(path)] = [*signature, digest]
                self._dirty = True
        return digest

    def tree_digest(self, path: Path, remember: bool = True) -> str:
        """Digest of a file, or of a folder's files (their relative names and contents). `remember=False` for
        files about to move (stage outputs): their digest is recorded in the cache entry instead."""
        if path.is_file():
            return self.file_digest(path, remember)
        parts = [f"{file.relative_to(path).as_posix()}:{self.file_digest(file, remember)}" for file in _files(path)]
        return sha256_text("\n".join(parts))

    def save(self) -> None:
        with self._lock:
            if self._dirty and self.file is not None:
                atomic_write_text(self.file, json.dumps(self._known))
                self._dirty = False


def source_digest(source: SourceModel, digests: DigestCache) -> str:
    """The content digest of a source model, with its LoRA adapter when it has one (or its runtime adapters, each
    with its name, which names its file)."""
    digest = digests.tree_digest(source.path)
    if source.adapter is not None:
        digest = sha256_text(digest + digests.tree_digest(source.adapter))
    for adapter in source.adapters:
        digest = sha256_text(f"{digest}+{adapter.name}:{digests.tree_digest(adapter)}")
    return digest


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp") as out:
        out.write(text)
        temporary = Path(out.name)
    temporary.replace(path)
