"""Registration with Foundry Local's SDK on a tiny model: placement, catalog, smoke answer, idempotency,
clean --registry, refusals and an interrupted registration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy

pytest.importorskip("foundry_local_sdk")
SDK_ONLY = str(Path(__file__).with_name("sdk_only.py"))

PROJECT = """\
[project]
name = "{name}"
version = {version}

[source]
path = "{model}"

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
precision = "int4"

[template]
family = "auto"

[generation]
temperature = {temperature}

[register]
plugin = "foundry"
cache_dir = "{cache}"
smoke_max_tokens = 8
"""


def write(
    project: Path, model: Path, cache: Path, name: str = "tiny", version: int = 1, temperature: float = 0.0
) -> None:
    project.mkdir(exist_ok=True)
    (project / "slmdeploy.toml").write_text(
        PROJECT.format(name=name, version=version, model=model, cache=cache, temperature=temperature)
    )


def slmdeploy(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_slmdeploy(project, *args)


def catalog_ids(cache: Path) -> list[str]:
    data = json.loads((cache / "foundry.local.modelinfo.json").read_text())
    return sorted(model["model_info"]["id"] for model in data["models"])


@pytest.fixture
def setup(tiny_model, tmp_path):
    model = tiny_model("llama")
    cache = tmp_path / "foundry-cache"
    project = tmp_path / "project"
    write(project, model, cache)
    return project, model, cache


def test_registers_answers_and_is_found_by_the_sdk_alone(setup):
    project, _, cache = setup
    result = slmdeploy(project, "build")
    assert result.returncode == 0, result.stderr
    assert catalog_ids(cache) == ["tiny-int4:1"]
    folder = cache / "custom" / "tiny-int4"
    assert (folder / "inference_model.json").is_file() and (folder / "genai_config.json").is_file()
    manifest = json.loads((project / "build" / "int4" / "manifest.json").read_text())
    register = manifest["stages"][-1]
    assert register["plugin"] == "foundry" and register["artifact"]["model_id"] == "tiny-int4:1"
    details = register["artifact"]["details"]
    assert details["prompt"] == "What is the capital of France?" and details["usage"]["completion_tokens"] > 0
    # smoke_max_tokens = 8: a random model's answer is cut at 8 tokens, or ended sooner by its stop token
    finished = (details["finish_reason"], details["usage"]["completion_tokens"] == 8)
    assert finished in {("length", True), ("stop", False)}, details
    sdk = subprocess.run(
        [sys.executable, SDK_ONLY, "ask", str(cache), "tiny-int4:1", "16"],  # context: 256
        capture_output=True,
        text=True,
        check=False,
    )
    assert sdk.returncode == 0, sdk.stderr
    found = json.loads(sdk.stdout)
    assert found["ids"] == ["tiny-int4:1"] and isinstance(found["answer"], str) and not found["slmdeploy_imported"]
    listing = slmdeploy(project, "ls").stdout
    assert "tiny-int4" in listing and "foundry: tiny-int4:1" in listing
    run = slmdeploy(project, "run", "tiny-int4", "--prompt", "hello", "--max-tokens", "5")
    assert run.returncode == 0, run.stderr
    assert "running with Foundry Local" in run.stderr and "tokens/s" in run.stderr


def test_rebuilds_replace_or_leave_the_registration(setup):
    project, model, cache = setup
    assert slmdeploy(project, "build").returncode == 0
    again = slmdeploy(project, "build")
    assert "int4: register (foundry): cached" in again.stderr  # no change, nothing done
    write(project, model, cache, temperature=0.5)  # a change: same version, replaced
    changed = slmdeploy(project, "build")
    assert changed.returncode == 0, changed.stderr
    assert "int4: register (foundry): done" in changed.stderr
    assert catalog_ids(cache) == ["tiny-int4:1"]
    genai = json.loads((cache / "custom" / "tiny-int4" / "genai_config.json").read_text())
    assert genai["search"]["temperature"] == 0.5
    write(project, model, cache, version=2, temperature=0.5)  # a new version replaces the old id
    assert slmdeploy(project, "build").returncode == 0
    assert catalog_ids(cache) == ["tiny-int4:2"]
    subprocess.run([sys.executable, SDK_ONLY, "unregister", str(cache), "tiny-int4:2"], check=True)  # outside
    assert "int4: register (foundry): done" in slmdeploy(project, "build").stderr  # so registered again
    assert catalog_ids(cache) == ["tiny-int4:2"]


def test_clean_registry_removes_only_what_slmdeploy_put_there(setup):
    project, _, cache = setup
    assert slmdeploy(project, "build").returncode == 0
    foreign = cache / "custom" / "someone-elses-model"
    foreign.mkdir()
    (foreign / "genai_config.json").write_text("{}")
    result = slmdeploy(project, "clean", "--registry")
    assert result.returncode == 0, result.stderr
    assert "unregistered tiny-int4:1" in result.stdout
    assert catalog_ids(cache) == []
    assert not (cache / "custom" / "tiny-int4").exists()
    assert (foreign / "genai_config.json").read_text() == "{}"


def test_refuses_to_overwrite_a_folder_it_did_not_create(setup):
    project, _, cache = setup
    theirs = cache / "custom" / "tiny-int4"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    result = slmdeploy(project, "build")
    assert result.returncode == 2
    assert "tiny-int4 exists and slmdeploy did not create it for this project, so it is left alone" in " ".join(
        result.stderr.split()
    )
    assert sorted(path.name for path in theirs.iterdir()) == ["notes.txt"]
    assert not (cache / "foundry.local.modelinfo.json").exists()


def test_an_invalid_name_is_refused_before_anything_is_written(setup):
    project, model, cache = setup
    write(project, model, cache, name="../escape")
    result = slmdeploy(project, "build")
    assert result.returncode == 2
    assert "not a valid model name" in result.stderr
    assert not cache.exists()


INTERRUPTED = textwrap.dedent("""\
    import sys
    import foundry_local_sdk
    from slmdeploy_foundry import placement

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while the model answers")

    foundry_local_sdk.ChatSession.process_request = interrupted
    task = {"package": sys.argv[1], "cache": sys.argv[2], "name": "tiny-int4", "model_id": "tiny-int4:2",
            "project": sys.argv[3], "prompt": "hi", "max_tokens": 4}
    try:
        placement.register(task, print)
    except KeyboardInterrupt:
        print("ROLLED BACK")
""")


def test_an_interrupted_registration_leaves_cache_and_catalog_as_they_were(setup):
    project, _, cache = setup
    assert slmdeploy(project, "build").returncode == 0
    catalog_before = (cache / "foundry.local.modelinfo.json").read_bytes()
    folder = cache / "custom" / "tiny-int4"
    files_before = {path.name: path.read_bytes() for path in folder.iterdir()}
    package = project / "build" / "int4" / "model"
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, str(package), str(cache), str(project)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert "ROLLED BACK" in result.stdout, result.stderr
    assert (cache / "foundry.local.modelinfo.json").read_bytes() == catalog_before
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files_before
    assert sorted(path.name for path in (cache / "custom").iterdir()) == ["tiny-int4"]  # no leftovers


def test_a_change_undone_registers_the_first_package_again(setup):
    project, model, cache = setup
    assert slmdeploy(project, "build").returncode == 0
    write(project, model, cache, temperature=0.5)
    assert slmdeploy(project, "build").returncode == 0
    write(project, model, cache)  # back to the first settings, whose outputs are all cached
    again = slmdeploy(project, "build")
    assert "int4: template (chatml): cached" in again.stderr
    assert "int4: register (foundry): done" in again.stderr  # Foundry held the 0.5 package: replaced
    genai = json.loads((cache / "custom" / "tiny-int4" / "genai_config.json").read_text())
    assert genai["search"]["temperature"] == 0.0


def test_clean_registry_after_a_rebuild_with_nothing_to_do(setup):
    project, _, cache = setup
    assert slmdeploy(project, "build").returncode == 0
    assert "int4: register (foundry): cached" in slmdeploy(project, "build").stderr
    result = slmdeploy(project, "clean", "--registry")
    assert result.returncode == 0, result.stderr
    assert "unregistered tiny-int4:1" in result.stdout and catalog_ids(cache) == []


def killed_while_registering(project: Path) -> None:
    """`slmdeploy build`, killed with SIGKILL (the build and its workers) once the package is copied into the
    cache and the smoke test has started: nothing gets to roll back or record anything."""
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "build"]
    build = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert build.stderr is not None
    seen = []
    for line in build.stderr:
        seen.append(line)
        if "register (foundry): loading" in line:
            os.killpg(build.pid, signal.SIGKILL)
            break
    build.wait(timeout=60)
    assert build.returncode == -signal.SIGKILL, "".join(seen)


def test_ls_shows_what_a_killed_registration_left(setup):
    project, model, cache = setup
    killed_while_registering(project)
    folder = cache / "custom" / "tiny-int4"
    assert (folder / "model.onnx").is_file()  # copied, registered in the catalog, recorded nowhere
    listed = slmdeploy(project, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "tiny-int4:1" in listed.stdout and "left over" in listed.stdout, listed.stdout
    assert f"a registration was cut short ({folder}). Run `slmdeploy build`" in listed.stdout, listed.stdout
    [entry] = json.loads(slmdeploy(project, "ls", "--json").stdout)
    assert entry["leftover"]["path"] == str(folder)

    assert slmdeploy(project, "build").returncode == 0  # registers it again, replacing the folder
    [entry] = json.loads(slmdeploy(project, "ls", "--json").stdout)
    assert entry["registration_current"] is True and "leftover" not in entry

    write(project, model, cache, temperature=0.5)  # a new package for the same name, its registration killed
    killed_while_registering(project)
    listed = slmdeploy(project, "ls")
    assert "foundry: tiny-int4:1 (not current)" in listed.stdout, listed.stdout
    assert "is no longer current" in listed.stdout and "cut short" in listed.stdout, listed.stdout
    assert slmdeploy(project, "build").returncode == 0
    entries = json.loads(slmdeploy(project, "ls", "--json").stdout)
    assert [entry["registration_current"] for entry in entries] == [True]


def test_run_in_foundry_local_refuses_a_prompt_over_the_context_and_goes_on(setup):
    project, _, _ = setup
    assert slmdeploy(project, "build").returncode == 0
    overlong = " ".join(["word"] * 400)  # the tiny model's context is 256 tokens
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "run", "tiny-int4"]
    chat = subprocess.run(
        [*command, "--max-tokens", "4"],
        input=f"{overlong}\nhello\n/exit\n",
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert chat.returncode == 0, chat.stderr
    assert "Foundry Local" in chat.stderr, chat.stderr  # the registered package, run by Foundry Local's runtime
    refused, answered = chat.stderr.split("error: ", 1)[1].split("\n", 1)
    assert "does not fit the model's context of 256 tokens" in refused and "Send a shorter text" in refused
    assert "Traceback" not in chat.stderr and "ValidateGeneratorRequestBudget" not in chat.stderr
    assert "finish: " in answered, chat.stderr  # the next line was answered
    once = subprocess.run([*command, "--prompt", overlong], capture_output=True, text=True, timeout=300, check=False)
    assert once.returncode == 2 and "does not fit the model's context" in once.stderr, once.stderr
