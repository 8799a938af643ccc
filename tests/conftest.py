from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

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


@pytest.fixture
def fake_project(slmdeploy_project, monkeypatch):
    """A project using the fake plugins of tests/fakeplugins.py as its local plugins."""
    from fakeplugins import make_model

    def make(toml: str = FULL_PROJECT, **kwargs):
        plugins = (HERE / "fakeplugins.py").read_text(encoding="utf-8")
        project = slmdeploy_project(textwrap.dedent(toml), plugins=plugins, **kwargs)
        make_model(project.path / "model")
        return project

    return make


def runs(project) -> list[str]:
    log = project.path / "runs.log"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch):
    monkeypatch.delenv("SLMDEPLOY_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("SLMDEPLOY_TRACE_PLUGINS", raising=False)
