"""Plugins under development: an editable install's version names its source, so the cache follows code changes.

The cache key of a stage's output holds its plugin's version. A released plugin changes its version when its code
changes; a plugin installed in development mode (``pip install -e``, which records ``"editable": true`` in the
distribution's ``direct_url.json``, PEP 610) does not, and without this its stale outputs would be served after
every edit. So an editable distribution's version is followed by a digest of the files of the package that holds
the plugin: ``0.3.0+src.1f2e3d4c5b6a``. Any edit under that package (code, data files) re-runs its stages.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def development_version(dist: Any, plugin: Any, version: str) -> str:
    """`version`, followed by ``+src.<digest>`` when `dist` is an editable install and `plugin` a module of it."""
    if not _is_editable(dist):
        return version
    folder = _package_folder(plugin)
    return f"{version}+src.{source_digest(folder)}" if folder is not None else version


@functools.cache
def source_digest(folder: Path) -> str:
    """A digest of every file under `folder` (names and contents), leaving out byte-code caches; or of one file.
    Read once per process: the template families' seven entry points share one package."""
    digest = hashlib.sha256()
    root = folder.parent if folder.is_file() else folder
    files = [folder] if folder.is_file() else sorted(folder.rglob("*"))
    for file in files:
        if file.is_file() and "__pycache__" not in file.parts:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _is_editable(dist: Any) -> bool:
    try:
        text = dist.read_text("direct_url.json")
        return bool(text and json.loads(text).get("dir_info", {}).get("editable"))
    except (OSError, ValueError, AttributeError):
        return False


def _package_folder(plugin: Any) -> Path | None:
    """The folder of the top-level package that holds `plugin` (a module), or its file for a single-file module."""
    top = sys.modules.get(str(getattr(plugin, "__name__", "")).partition(".")[0])
    file = getattr(top, "__file__", None)
    if not file:
        return None
    return Path(file).parent if Path(file).name == "__init__.py" else Path(file)
