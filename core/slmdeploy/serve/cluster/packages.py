"""How a package reaches the nodes: through the shared cache the Ray executor builds into (``[build] cache_dir``,
mounted by every node at one path), never through Ray's object store. A replica checks the package's digest
before it loads it, as a build task checks its input's."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.errors import InputError
from slmdeploy.execute.cache import output_digest
from slmdeploy.plan.digests import DigestCache
from slmdeploy.serve.models import PACKAGE_FILE, ModelSpec

MANIFEST = "manifest.json"


@attrs.frozen
class PlacedPackage:
    """A package as every node finds it: its folder on the shared file system and the digest it must have."""

    spec: ModelSpec
    """The name clients use; `spec.folder` is the folder replicas load (in the cache, for a built variant)."""
    digest: str
    entry: Path | None = None
    """The cache entry holding the package (its ``entry.json`` names the artifact the digest covers); None for a
    package folder given by path, whose digest is its files'."""


def place(spec: ModelSpec, cache_root: Path | None) -> PlacedPackage:
    """Where `spec`'s package is in the project's cache under `cache_root` (``build/<variant>/model`` is hard links
    into it: the last stage whose output holds a package), or the folder itself when it was not built there."""
    for stage in reversed(_stages(spec.folder.parent / MANIFEST) if cache_root is not None else []):
        path, digest = str((stage.get("artifact") or {}).get("path", "")), stage.get("output_digest")
        entry = cache_root / "cache" / str(stage.get("key"))  # type: ignore[operator]
        folder = entry / "out" / path[len("out:") :]
        if path.startswith("out:") and digest and (folder / PACKAGE_FILE).is_file():
            # its runtime LoRA adapters are files of the package: read from the cache too, like the rest of it
            adapters = tuple((name, folder / file.relative_to(spec.folder)) for name, file in spec.adapters)
            return PlacedPackage(attrs.evolve(spec, folder=folder, adapters=adapters), str(digest), entry)
    return PlacedPackage(spec, DigestCache().tree_digest(spec.folder))


def _stages(manifest: Path) -> list[dict[str, Any]]:
    try:
        stages = json.loads(manifest.read_text(encoding="utf-8"))["stages"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [stage for stage in stages if isinstance(stage, dict)] if isinstance(stages, list) else []


def verify(placed: PlacedPackage) -> None:
    """Refuse to serve a package whose files on this node are not the ones the server was started with (a cache
    that differs between machines, or changed since)."""
    digests = DigestCache()  # hash afresh: what this node sees now
    if placed.entry is None:
        found = digests.tree_digest(placed.spec.folder) if placed.spec.folder.is_dir() else "none"
    else:
        try:
            record = json.loads((placed.entry / "entry.json").read_text(encoding="utf-8"))
            found = output_digest(placed.entry / "out", record["artifact"], digests)
        except (OSError, ValueError, KeyError):
            found = "none"
    if found != placed.digest:
        raise InputError(
            f"the package of {placed.spec.name} on {socket.gethostname()} has the digest {found[:12]}, not "
            f"{placed.digest[:12]}",
            where=str(placed.entry or placed.spec.folder),
            fix="Every node must see the same files at this path: check the shared file system ([build] cache_dir), "
            "and that nothing changed it since the server started.",
        )
