"""Meta-tests: every hookspec is documented and exercised by a test; the public API is what it says."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import slmdeploy.plugin
from slmdeploy import hookspecs

TESTS = Path(__file__).parents[1]
HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("slmdeploy_")]


def test_there_are_hooks_for_the_five_stages():
    for stage in ("converters", "quantizers", "templates", "evaluators", "registrars"):
        assert f"slmdeploy_register_{stage}" in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_typed_and_documented(name):
    function = getattr(hookspecs, name)
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty
    assert all(parameter.annotation is not inspect.Parameter.empty for parameter in signature.parameters.values())
    doc = inspect.getdoc(function) or ""
    assert len(doc) > 80 and ("collecting" in doc or "firstresult" in doc)
    assert function.slmdeploy_spec is not None  # marked with the hookspec marker


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_has_a_test(name):
    sources = [path.read_text() for path in TESTS.rglob("*.py") if path.name != "test_meta.py"]
    assert any(f"def {name}" in source for source in sources), f"no test plugin implements {name}"


def test_public_api_exports_what_it_lists():
    for name in slmdeploy.plugin.__all__:
        assert hasattr(slmdeploy.plugin, name)
    assert "hookimpl" in slmdeploy.plugin.__all__
    doc = inspect.getdoc(slmdeploy.plugin) or ""
    assert "[project.entry-points.slmdeploy]" in doc and "@hookimpl" in doc


def test_no_two_test_files_share_a_basename():
    """The test folders are not packages: pytest imports each file by its basename, and a second file of the same
    name stops the whole run at collection."""
    from collections import Counter

    tests = Path(__file__).resolve().parents[1]
    names = Counter(path.name for path in tests.rglob("test_*.py") if "fixtures" not in path.parts)
    assert [name for name, count in names.items() if count > 1] == []
