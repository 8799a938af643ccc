"""Where the integration tests' build of the demo project registers: a Foundry Local cache of its own."""

from __future__ import annotations

import os
from pathlib import Path


def demo_foundry_cache(project: Path) -> Path:
    return project.parent / f"{project.name}-foundry-cache"


def demo_environment(project: Path) -> dict[str, str]:
    """The demo registers into Foundry Local's cache; the tests keep that cache in a temporary folder."""
    return {**os.environ, "SLMDEPLOY_FOUNDRY_CACHE": str(demo_foundry_cache(project)), "PYTHONUNBUFFERED": "1"}
