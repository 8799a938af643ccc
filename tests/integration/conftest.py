from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy

from demo_build import demo_environment, demo_foundry_cache, require_demo_model
from serving import TINY_CONTEXT, tiny_project

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("olive", reason="integration tests need the [olive] extra")
pytest.importorskip("onnxruntime_genai")


def pytest_collection_modifyitems(items):
    """Marks this folder's tests `integration` (the hook sees every collected item, the unit tests' too)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.resolve().is_relative_to(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory):
    """The demo project (slmdeploy.toml and evaluation/ of the repository), built once per test session."""
    require_demo_model()
    project = tmp_path_factory.mktemp("demo")
    shutil.copy(ROOT / "slmdeploy.toml", project / "slmdeploy.toml")
    shutil.copytree(ROOT / "evaluation", project / "evaluation")
    try:
        result = run_slmdeploy(project, "build", env=demo_environment(project))
        assert result.returncode == 0, result.stderr
        yield project
    finally:
        # 1.3 GB of models (the fp32 conversion, the PyTorch reference, the variants): removed when the session ends,
        # also when it failed (pytest keeps a failed session's folders, and CI disks are not large)
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(demo_foundry_cache(project), ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_serving_project(tmp_path_factory):
    """A tiny Llama's int4 deployed in a project, context `TINY_CONTEXT`: the servers of the serve tests load it."""
    return tiny_project(tmp_path_factory.mktemp("tiny"), TINY_CONTEXT)
