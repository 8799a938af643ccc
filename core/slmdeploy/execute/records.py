"""Stage outputs as records: the artifact a stage returned, stored beside its files in the cache entry."""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Any

import cattrs

from slmdeploy.artifacts import Artifact
from slmdeploy.execute.cache import Entry

converter = cattrs.Converter()
converter.register_unstructure_hook(Path, str)
converter.register_structure_hook(Path, lambda value, _: Path(value))


def dump_artifact(artifact: Artifact, out: Path) -> dict[str, Any]:
    data = converter.unstructure(artifact)
    data["path"] = _relative_or_absolute(Path(artifact.path), out)
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain


def load_artifact(entry: Entry, expected: type[Artifact]) -> Artifact:
    """Rebuild a cached artifact, as the class the plugin returned when it is importable."""
    cls = _import_class(entry.record.get("artifact_type", "")) or expected
    data = dict(entry.record["artifact"])
    path = data.pop("path")
    data["path"] = entry.out / path[len("out:") :] if path.startswith("out:") else Path(path)
    return converter.structure(data, cls)


def _import_class(qualified: str) -> type[Artifact] | None:
    module, _, name = qualified.partition(":")
    with contextlib.suppress(ImportError, AttributeError, ValueError):
        found = getattr(importlib.import_module(module), name)
        if isinstance(found, type) and issubclass(found, Artifact):
            return found
    return None


def _relative_or_absolute(path: Path, out: Path) -> str:
    return f"out:{path.resolve().relative_to(out.resolve()).as_posix()}" if inside(path, out) else str(path.resolve())


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
