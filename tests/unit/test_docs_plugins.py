"""docs/plugins.md's complete family example runs, and passes the parity check on Gemma 2's and 3's real templates;
the reference table names every attribute ChatTemplateFamily has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_templates import TABLES, fixture, model_folder

from slmdeploy.plugin import DeployPackage, OnnxModel
from slmdeploy.plugin.templates import ChatTemplateFamily

DOC = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")


def example_family():
    block = DOC.split("### A complete family", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    return namespace["GemmaFamily"]


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_the_documented_family_passes_parity(name, run_stage, tmp_path):
    package = run_stage(example_family(), OnnxModel(model_folder(tmp_path, fixture(name))), tables=TABLES)
    assert isinstance(package, DeployPackage) and package.family == "my-gemma"


def test_every_family_attribute_is_documented():
    attributes = [name for name in vars(ChatTemplateFamily) if re.fullmatch(r"[A-Z][A-Z_]+", name)]
    assert attributes
    for name in [*attributes, "PLUGIN_NAME", "Options"]:
        assert f"| `{name}` |" in DOC, name
