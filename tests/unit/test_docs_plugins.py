"""docs/plugins/templates.md's complete family example runs, and passes the parity check on Gemma 2's and 3's real
templates (tests/unit/test_docs.py checks that every attribute is documented)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_templates import TABLES, fixture, model_folder

from slmdeploy.plugin import DeployPackage, OnnxModel

DOC = (Path(__file__).parents[2] / "docs" / "plugins" / "templates.md").read_text(encoding="utf-8")


def example_family():
    block = DOC.split("## A complete family", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "docs/plugins/templates.md", "exec"), namespace)
    return namespace["GemmaFamily"]


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_the_documented_family_passes_parity(name, run_stage, tmp_path):
    package = run_stage(example_family(), OnnxModel(model_folder(tmp_path, fixture(name))), tables=TABLES)
    assert isinstance(package, DeployPackage) and package.family == "my-gemma"
