"""Copying model folders cheaply (hard links where the file system allows, copies elsewhere), and their size.

Linked files share their content with the cache, so they must never be edited in place: replace a file by
writing a new one (unlink, then write) instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def hardlink_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def link_tree(source: Path, target: Path) -> None:
    """Put `source`'s files (and subfolders) into `target`, which may exist, as hard links or copies."""
    shutil.copytree(source, target, copy_function=hardlink_or_copy, dirs_exist_ok=True)


def tree_size(path: Path) -> int:
    """The bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
