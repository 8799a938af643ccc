"""The command line: init, help, start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys

import tomlkit

from slmdeploy.config.project import load_project


def test_init_writes_a_commented_starter_file(slmdeploy_project):
    project = slmdeploy_project("")
    project.file.unlink()
    (project.path / "my model!").mkdir()
    result = project.cli("init", "--name", "My Model!")
    assert result.exit_code == 0, result.output
    text = project.file.read_text()
    assert "# a Hugging Face model folder or a .gguf file" in text
    assert tomlkit.parse(text)["project"]["name"] == "My-Model"
    loaded = load_project(project.file)
    assert loaded.project.name == "My-Model"
    assert loaded.stages["quantize"]["precision"] == ["int4", "int8"]


def test_init_refuses_to_overwrite(slmdeploy_project):
    project = slmdeploy_project("# mine\n")
    result = project.cli("init")
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert project.file.read_text() == "# mine\n"


def test_init_then_plan_names_the_missing_model(slmdeploy_project):
    project = slmdeploy_project("")
    project.file.unlink()
    assert project.cli("init").exit_code == 0
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "models/my-model does not exist" in " ".join(result.stderr.split())


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from slmdeploy.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['pluggy', 'rich', 'tomlkit', 'cattrs', 'torch', 'onnxruntime', 'transformers', 'olive']\n"
        "print('IMPORTED', [name for name in heavy if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in result.stdout
    assert "Usage: slmdeploy" in result.stdout


def test_version_and_usage_errors(slmdeploy_project):
    command = [sys.executable, "-m", "slmdeploy"]
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "slmdeploy, version" in result.stdout
    wrong = subprocess.run([*command, "biuld"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "No such command 'biuld'" in wrong.stderr


def test_plugins_json_lists_the_core_fallback(slmdeploy_project):
    listing = json.loads(slmdeploy_project("").cli("plugins", "--json").stdout)
    builtin = next(plugin for plugin in listing if plugin["name"] == "slmdeploy.builtin")
    assert builtin["hooks"] == ["slmdeploy_template_family"]
