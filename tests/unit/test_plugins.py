"""Plugin loading: entry points, local plugins, blocking, tracing, and the errors of bad plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import HERE, MINIMAL_PROJECT, pip_install, runs


def test_plugins_lists_local_plugins_with_hooks_and_stages(fake_project):
    project = fake_project()
    listing = json.loads(project.cli("plugins", "--json", "--options").stdout)
    local = next(plugin for plugin in listing if plugin["name"] == "slmdeploy_plugins.py")
    assert local["version"].startswith("local-")
    assert local["from"].endswith("slmdeploy_plugins.py")
    assert "slmdeploy_register_quantizers" in local["hooks"]
    provides = {(item["stage"], item["name"]) for item in local["provides"]}
    assert ("quantize", "fake") in provides and ("register", "dir") in provides
    quantizer = next(item for item in local["provides"] if item["name"] == "fake")
    precision = next(option for option in quantizer["options"] if option["key"] == "precision")
    assert precision == {
        "key": "precision",
        "type": 'one of "int4", "int8", "fp32"',
        "default": "int4",
        "help": "weight precision",
        "variants": True,
    }
    text = project.cli("plugins", "--options").stdout
    assert "slmdeploy_plugins.py local-" in text and "quantize: fake" in text and "block_size = 32" in text


def test_blocked_plugins_are_not_loaded(fake_project, monkeypatch):
    project = fake_project()
    result = project.cli("--disable-plugin", "slmdeploy_plugins.py", "plan")
    assert result.exit_code == 2
    assert "no installed convert plugin is named 'copy'" in result.stderr
    monkeypatch.setenv("SLMDEPLOY_DISABLE_PLUGINS", "slmdeploy_plugins.py")
    listing = json.loads(project.cli("plugins", "--json").stdout)
    assert {"name": "slmdeploy_plugins.py", "blocked": True} in listing


def test_tracing_shows_hook_calls(fake_project):
    project = fake_project()
    env = {**os.environ, "SLMDEPLOY_TRACE_PLUGINS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "slmdeploy", "-C", str(project.path), "plan"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "slmdeploy_register_converters" in result.stderr
    assert "slmdeploy_check_project" in result.stderr


def test_registering_something_that_is_not_a_stage_class(fake_project):
    project = fake_project(MINIMAL_PROJECT)
    plugin_file = project.path / "slmdeploy_plugins.py"
    plugin_file.write_text(plugin_file.read_text().replace("return [CopyConverter]", "return [object]"))
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "plugin 'slmdeploy_plugins.py' registered <class 'object'> for [convert]" in result.stderr


def test_implementing_an_unknown_hook(fake_project):
    project = fake_project(MINIMAL_PROJECT)
    with (project.path / "slmdeploy_plugins.py").open("a") as file:
        file.write("\n@hookimpl\ndef slmdeploy_register_convertors():\n    return []\n")
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "implements a hook slmdeploy does not define" in result.stderr


def test_local_plugin_that_fails_to_import(fake_project):
    project = fake_project(MINIMAL_PROJECT)
    (project.path / "slmdeploy_plugins.py").write_text("import no_such_module\n")
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "the local plugin file failed to import" in result.stderr
    assert "slmdeploy_plugins.py" in result.stderr


def test_template_dispatch_uses_the_first_family_that_claims_the_model(fake_project):
    project = fake_project()
    result = project.cli("build")
    assert result.exit_code == 0
    assert "template (fakefam): running" in result.stderr


def test_template_dispatch_fallback_lists_the_families(fake_project):
    from fakeplugins import make_model

    project = fake_project()
    make_model(project.path / "model", model_type="mystery")
    result = project.cli("build")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "no installed template family claims this model (model_type 'mystery', architectures Fake)" in message
    assert '[template] family = "<name>"' in message
    assert "int4 template" not in runs(project)


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """The example plugin package, installed by pip from its folder into a directory of its own."""
    return pip_install(HERE / "example_plugin", tmp_path_factory.mktemp("site"))


def test_an_installed_third_party_plugin_is_listed_and_used(installed_example, slmdeploy_project):
    from fakeplugins import make_model

    project = slmdeploy_project(MINIMAL_PROJECT.replace('"copy"', '"example-copy"\nmarker = "from-the-test"'))
    make_model(project.path / "model")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_example), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project.path), "--plain"]
    listing = json.loads(
        subprocess.run([*command, "plugins", "--json"], capture_output=True, text=True, env=env, check=True).stdout
    )
    example = next(plugin for plugin in listing if plugin["name"] == "example")
    assert example["from"] == "slmdeploy-example-plugin 0.3.0"
    assert example["provides"] == [{"stage": "convert", "name": "example-copy"}]
    subprocess.run([*command, "build"], env=env, check=True, capture_output=True)
    assert (Path(project.path) / "build" / "default" / "model" / "marker.txt").read_text() == "from-the-test"


def test_a_crash_in_a_plugins_check_names_the_plugin(fake_project):
    project = fake_project()
    plugin_file = project.path / "slmdeploy_plugins.py"
    plugin_file.write_text(
        plugin_file.read_text()
        + """

def _broken_check(cls, options):
    raise KeyError("oops")


FakeQuantizer.check = classmethod(_broken_check)
"""
    )
    result = project.cli("plan")
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "quantize plugin 'fake' (" in message and "checking [quantize] crashed: KeyError('oops')" in message
