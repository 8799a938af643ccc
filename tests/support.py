"""What the core's unit tests share: the fake project file and reading which stages ran."""

from __future__ import annotations

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


def runs(project) -> list[str]:
    log = project.path / "runs.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []
