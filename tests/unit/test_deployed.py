"""ls, run and clean --registry over what a build deployed (fake plugins: a folder registry and an echo chat)."""

from __future__ import annotations

import json
import os
import sys

import pytest


def built(project):
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    return project


def test_ls_lists_deployed_models(fake_project):
    project = built(fake_project())
    table = project.cli("ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "PRECISION", "SIZE", "GATES", "REGISTERED", "BUILT"]
    assert table[1].split()[:6] == ["fake-model-int4", "1", "int4", "0.0", "MB", "passed"]
    assert "dir: fake-model:1" in table[1]
    listing = json.loads(project.cli("ls", "--json").stdout)
    assert [item["variant"] for item in listing] == ["int4", "int8"]
    assert listing[0]["registration"]["model_id"] == "fake-model:1"
    assert listing[0]["size_bytes"] > 4096


def test_ls_before_any_build(fake_project):
    result = fake_project().cli("ls")
    assert result.exit_code == 0 and result.stdout.split() == [
        "NAME",
        "VERSION",
        "PRECISION",
        "SIZE",
        "GATES",
        "REGISTERED",
        "BUILT",
    ]


def test_run_answers_once_with_a_prompt(fake_project):
    project = built(fake_project())
    result = project.cli("run", "int8", "--prompt", "hello there world")
    assert result.exit_code == 0, result.output
    assert result.stdout == "world there hello (turn 1) \n"
    assert "fake-model-int8: running with echo (fake)" in result.stderr
    assert "[4 tokens," in result.stderr and "tokens/s" in result.stderr and "finish: stop" in result.stderr
    short = project.cli("run", "int8", "--prompt", "a b c", "--max-tokens", "2")
    assert short.stdout == "c b \n" and "finish: length" in short.stderr


def test_run_an_unknown_model_lists_the_deployed_ones(fake_project):
    project = built(fake_project())
    result = project.cli("run", "nope", "--prompt", "x")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "no deployed model is named 'nope'. Deployed models: fake-model-int4, fake-model-int8." in message


def test_interactive_run_holds_two_turns_and_exits(fake_project):
    pexpect = pytest.importorskip("pexpect")
    project = built(fake_project())
    child = pexpect.spawn(
        sys.executable,
        ["-m", "slmdeploy", "-C", str(project.path), "run", "int4"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        encoding="utf-8",
        timeout=30,
    )
    child.expect_exact(">>> ")
    child.sendline("one two")
    child.expect_exact("two one (turn 1)")
    child.expect_exact(">>> ")
    child.sendline("three four")
    child.expect_exact("four three (turn 2)")  # the conversation is kept: this is the second user turn
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_interactive_run_ends_on_ctrl_d(fake_project):
    pexpect = pytest.importorskip("pexpect")
    project = built(fake_project())
    child = pexpect.spawn(
        sys.executable, ["-m", "slmdeploy", "-C", str(project.path), "run", "int4"], encoding="utf-8", timeout=30
    )
    child.expect_exact(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_clean_registry_unregisters_then_cleans(fake_project):
    project = built(fake_project())
    registry = project.path / "registry" / "fake-model"
    assert sorted(path.name for path in registry.iterdir()) == ["int4", "int8"]
    result = project.cli("clean", "--registry")
    assert result.exit_code == 0, result.output
    assert f"removed {registry / 'int4'}" in result.stdout
    assert not list(registry.iterdir())
    assert not (project.path / "build").exists()


def test_a_damaged_manifest_is_a_clear_error(fake_project):
    project = built(fake_project())
    (project.path / "build" / "int4" / "manifest.json").write_text("{not json")
    result = project.cli("ls")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "manifest.json: the build manifest is damaged" in " ".join(result.stderr.split())
        and "slmdeploy build" in result.stderr
    )
