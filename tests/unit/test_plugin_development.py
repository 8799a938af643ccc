"""A plugin under development (installed with ``pip install -e``) changes its steps' cache keys when its code changes,
with no release; a regular install of the same code keeps serving its cached output (docs/plugins/cache.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from support import HERE

PROJECT = """\
[project]
name = "m"

[source]
path = "model"

[convert]
plugin = "example-copy"
marker = "from-the-test"
"""


def install(source: Path, prefix: Path, editable: bool) -> dict[str, str]:
    """pip-install the plugin folder `source` into `prefix`; the environment that sees it."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--prefix", str(prefix), *(["-e"] if editable else []), str(source)]
    subprocess.run(command, check=True)
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    # An editable install's .pth file is read only in a site directory: the source folder goes on the path too.
    paths = [site, *([str(source)] if editable else []), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def build(project: Path, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "build"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return (project / "build" / "default" / "model" / "marker.txt").read_text()


def listed_version(project: Path, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "plugins", "--json"]
    listing = json.loads(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)
    return str(next(plugin for plugin in listing if plugin["name"] == "example")["version"])


def edit_the_plugin(source: Path) -> None:
    module = source / "slmdeploy_example_plugin" / "__init__.py"
    text = module.read_text()
    assert "write_text(self.options.marker," in text
    module.write_text(text.replace("write_text(self.options.marker,", 'write_text(self.options.marker + " (edited)",'))


def project_with_model(root: Path) -> Path:
    from fakeplugins import make_model

    project = root / "project"
    project.mkdir()
    (project / "slmdeploy.toml").write_text(PROJECT)
    make_model(project / "model")
    return project


def test_an_edit_to_an_editable_plugin_rebuilds_its_steps(tmp_path):
    source = tmp_path / "plugin"
    shutil.copytree(HERE / "example_plugin", source)
    env = install(source, tmp_path / "prefix", editable=True)
    project = project_with_model(tmp_path)
    before = listed_version(project, env)
    assert before.startswith("0.3.0+src.")
    assert build(project, env) == "from-the-test"
    edit_the_plugin(source)
    assert listed_version(project, env) != before
    assert build(project, env) == "from-the-test (edited)"


def test_a_regular_install_keeps_its_version_and_its_cache(tmp_path):
    source = tmp_path / "plugin"
    shutil.copytree(HERE / "example_plugin", source)
    env = install(source, tmp_path / "prefix", editable=False)
    project = project_with_model(tmp_path)
    assert listed_version(project, env) == "0.3.0"
    assert build(project, env) == "from-the-test"
    installed = Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "slmdeploy_example_plugin"
    edit_the_plugin(installed.parent)  # the installed copy's code changes, its version does not
    assert build(project, env) == "from-the-test"  # the documented limit: bump the version or CACHE_VERSION
