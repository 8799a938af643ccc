"""Two plugins registering one stage name: a third-party one shadows the shipped one (and says so); two
third-party ones clash, an error for every command but ``slmdeploy plugins``, which lists both."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slmdeploy.host.inventory import describe_plugins, registry_notices, render_plugins
from slmdeploy.host.manager import get_plugin_manager
from slmdeploy.host.registry import Registry

from support import MINIMAL_PROJECT, pip_install

LOCAL = "slmdeploy_plugins.py"

THIRD_PARTY_GEMMA = '''\
"""A third party's Gemma template family, installed before slmdeploy shipped one of the same name."""

import json
import shutil

from slmdeploy.plugin import DeployPackage, TemplateFamily, hookimpl


class ThirdPartyGemma(TemplateFamily):
    PLUGIN_NAME = "gemma"

    def run(self, artifact, output_dir):
        shutil.copytree(artifact.path, output_dir, dirs_exist_ok=True)
        info = {"Name": self.context.project_name, "made_by": "the third-party gemma family"}
        (output_dir / "inference_model.json").write_text(json.dumps(info), encoding="utf-8")
        return DeployPackage(output_dir, family=self.PLUGIN_NAME, model_name=self.context.project_name)


@hookimpl
def slmdeploy_register_templates():
    return [ThirdPartyGemma]
'''

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "slmdeploy-gemma-family"
version = "1.0.0"
requires-python = ">=3.11"
dependencies = ["slmdeploy"]

[project.entry-points.slmdeploy]
gemma-family = "slmdeploy_gemma_family"
"""

GEMMA_PROJECT = MINIMAL_PROJECT + '\n[template]\nfamily = "gemma"\n'


@pytest.fixture(scope="module")
def installed_gemma(tmp_path_factory):
    """The third-party gemma family, made as a package folder here and installed by pip into a folder of its own."""
    package = tmp_path_factory.mktemp("gemma-family")
    (package / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (package / "slmdeploy_gemma_family").mkdir()
    (package / "slmdeploy_gemma_family" / "__init__.py").write_text(THIRD_PARTY_GEMMA, encoding="utf-8")
    return pip_install(package, tmp_path_factory.mktemp("site"))


def test_an_installed_family_shadows_the_shipped_one_of_its_name(installed_gemma, fake_project):
    project = fake_project(GEMMA_PROJECT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_gemma), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project.path), "--plain"]

    def slmdeploy(*args):
        return subprocess.run([*command, *args], capture_output=True, text=True, env=env, check=True)

    notice = (
        "notice: the template implementation 'gemma' of plugin 'gemma-family' (slmdeploy-gemma-family 1.0.0) "
        "shadows the shipped one of 'template-gemma'"
    )
    assert notice in " ".join(slmdeploy("plan").stderr.split())
    slmdeploy("build")
    info = json.loads((project.path / "build" / "default" / "model" / "inference_model.json").read_text())
    assert info["made_by"] == "the third-party gemma family"

    listed = slmdeploy("plugins", "--json")
    listing = {plugin["name"]: plugin for plugin in json.loads(listed.stdout)}
    third_party = listing["gemma-family"]
    assert third_party["from"] == "slmdeploy-gemma-family 1.0.0"
    assert third_party["provides"] == [{"stage": "template", "name": "gemma", "shadows": "template-gemma"}]
    assert {"stage": "template", "name": "gemma", "shadowed_by": "gemma-family"} in listing["template-gemma"][
        "provides"
    ]
    assert notice in " ".join(listed.stderr.split())
    text = slmdeploy("plugins").stdout
    assert "template: gemma  (shadows the shipped one of template-gemma)" in text
    assert "template: gemma  (shadowed by gemma-family: not used)" in text


def _second_copy_converter(project):
    """The project's local plugins again, as an importable module: a second provider of the converter 'copy'."""
    extra = project.path / "more_plugins"
    extra.mkdir()
    (extra / "second_copy.py").write_text((project.path / "slmdeploy_plugins.py").read_text())
    return extra


def test_two_third_party_implementations_clash_naming_both_and_the_fix(fake_project, monkeypatch):
    project = fake_project()
    monkeypatch.syspath_prepend(str(_second_copy_converter(project)))
    import second_copy

    manager = get_plugin_manager(project.path)
    manager.register(second_copy, name="second-copy")
    with pytest.raises(Exception) as caught:
        Registry(manager)
    message = " ".join(str(caught.value).split())
    assert "two plugins provide a convert implementation named 'copy':" in message
    assert "'slmdeploy_plugins.py'" in message and "'second-copy'" in message
    assert "SLMDEPLOY_DISABLE_PLUGINS=slmdeploy_plugins.py or SLMDEPLOY_DISABLE_PLUGINS=second-copy" in message

    # What `slmdeploy plugins` does: a registry that keeps the clash, listed with both providers marked.
    registry = Registry(manager, allow_clashes=True)
    assert registry.get("convert", "copy") is None  # neither is chosen for the user
    assert {provided.plugin for provided in registry.provided["convert"]["copy"]} == {"second-copy", LOCAL}
    assert registry.shadowings == []
    listing = {plugin["name"]: plugin for plugin in describe_plugins(registry, with_options=False)}
    assert {"stage": "convert", "name": "copy", "clashes_with": LOCAL} in listing["second-copy"]["provides"]
    assert {"stage": "convert", "name": "copy", "clashes_with": "second-copy"} in listing[LOCAL]["provides"]
    assert "convert: copy  (clashes with second-copy: neither can be used)" in render_plugins(list(listing.values()))
    notices = registry_notices(registry)
    # The second module repeats every class of the first: each name the local plugins register clashes.
    local_names = [name for by_name in registry.provided.values() for name, providers in by_name.items()
                   if any(provided.plugin == LOCAL for provided in providers)]  # fmt: skip
    assert len(notices) == len(local_names) == len(registry.clashes)
    assert "error: two plugins provide a convert implementation named 'copy'" in "\n".join(notices)
