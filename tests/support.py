"""What the core's unit tests share: the fake project file and reading which stages ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

FULL_PROJECT = """\
[project]
name = "fake-model"
version = 1

[source]
path = "model"

[convert]
plugin = "copy"

[quantize]
plugin = "fake"
precision = ["int4", "int8"]

[template]
family = "auto"

[evaluate]
plugins = ["size"]

[register]
plugin = "dir"
folder = "registry"
"""

MINIMAL_PROJECT = """\
[project]
name = "m"

[source]
path = "model"

[convert]
plugin = "copy"
"""


def runs(project) -> list[str]:
    log = project.path / "runs.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def pip_install(package: Path, target: Path) -> Path:
    """Install a plugin package from its folder into `target` with pip (its build backend, hatchling, is already
    installed), as a user would install a third-party plugin; put `target` on PYTHONPATH to load it."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(target), str(package)], check=True)
    return target
