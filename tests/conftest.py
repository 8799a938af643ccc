from __future__ import annotations

import textwrap

import pytest

from support import FULL_PROJECT, HERE


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


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch):
    monkeypatch.delenv("SLMDEPLOY_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("SLMDEPLOY_TRACE_PLUGINS", raising=False)
