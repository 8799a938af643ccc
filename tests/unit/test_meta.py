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


@pytest.fixture(scope="module")
def answered_hooks(tmp_path_factory):
    """The hooks that a test plugin (tests/fakeplugins.py, loaded as a project's local plugins) answered while the
    commands a user runs went through a whole fake project: plan, build, report, ls, run, and a quantize search."""
    from _pytest.monkeypatch import MonkeyPatch

    from slmdeploy.host.manager import LOCAL_PLUGINS, PluginManager

    from support import FULL_PROJECT

    answered: set[str] = set()
    original = PluginManager.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)

        def after(outcome, hook_name, hook_impls, kwargs):
            local = any(impl.plugin_name == LOCAL_PLUGINS for impl in hook_impls)
            if local and outcome.exception is None:
                answered.add(hook_name)

        self.add_hookcall_monitoring(lambda hook_name, hook_impls, kwargs: None, after)

    monkeypatch = MonkeyPatch()
    monkeypatch.setattr(PluginManager, "__init__", record)
    try:
        search = FULL_PROJECT.replace('precision = ["int4", "int8"]', "search = { min_top1 = 0.5 }")
        search = search.replace('plugins = ["size"]', 'plugins = ["size", "figures"]')  # the figures it judges
        for toml, commands in ((FULL_PROJECT, [["plan"], ["build"], ["report"], ["ls"],
                                               ["run", "int8", "--prompt", "hello"]]),
                               (search, [["plan"]])):  # fmt: skip
            project = _fake_project(tmp_path_factory.mktemp("hooks"), toml)
            for command in commands:
                result = project.cli(*command)
                assert result.exit_code == 0, (command, result.output)
            answered |= _registrations_used(project.path / "build" / "int8" / "manifest.json")
    finally:
        monkeypatch.undo()
    return answered


def _registrations_used(manifest):
    """The registration hooks (called one implementation at a time, outside hook-call monitoring) whose test plugin
    classes ran a step of the build."""
    import json

    from slmdeploy.host.registry import REGISTRATION_HOOKS

    if not manifest.is_file():
        return set()
    fake_classes = {"copy", "fake", "fakefam", "size", "dir"}  # the PLUGIN_NAMEs tests/fakeplugins.py registers
    stages = json.loads(manifest.read_text())["stages"]
    return {REGISTRATION_HOOKS[step["stage"].split(".")[0]] for step in stages if step["plugin"] in fake_classes}


def _fake_project(folder, toml):
    from slmdeploy.testing import ProjectFolder

    from fakeplugins import make_model

    (folder / "slmdeploy.toml").write_text(toml, encoding="utf-8")
    (folder / "slmdeploy_plugins.py").write_text((TESTS / "fakeplugins.py").read_text(encoding="utf-8"))
    make_model(folder / "model")
    return ProjectFolder(folder)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_called_and_answered_by_a_test_plugin(name, answered_hooks):
    assert name in answered_hooks, f"no command of the fake project reached a test plugin's {name}"


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
