"""Issue 13: every bad input a clear error, every interruption reported as what it was.

Each bad input gets one paragraph (what, where, how to fix), exit code 2, no traceback, and leaves the project as
it was; a failure injected anywhere (a stage, its worker, a hook) is reported in the user's terms, never as a
traceback, and Ctrl-C is an interruption (exit code 130)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import FULL_PROJECT

ONE_VARIANT = FULL_PROJECT.replace('precision = ["int4", "int8"]', 'precision = "int4"')


def _first_line(stderr: str) -> str:
    return " ".join(stderr.split("\n\n", maxsplit=1)[0].split())


def _state(project) -> dict[str, bytes]:
    """What a failed command must leave as it was: the project file, build/, the cache, the registry."""
    files = {"slmdeploy.toml": project.file.read_bytes()}
    for folder in ("build", ".slmdeploy/cache", "registry"):
        root = project.path / folder
        files |= {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()} if root.exists() else {}
    return files


def _edit(old: str, new: str, base: str = FULL_PROJECT) -> str:
    assert old in base
    return base.replace(old, new, 1)


BAD_PROJECT_FILES = [
    pytest.param(
        _edit('name = "fake-model"', 'name = "a"\nname = "b"'),
        (),
        "error: slmdeploy.toml:3: the key 'name' is written twice in [project]. Keep one of them",
        id="key-twice",
    ),
    pytest.param(
        FULL_PROJECT + '\n[project]\nname = "again"\n',
        (),
        "error: slmdeploy.toml:25: the table [project] is written twice. Keep one of them",
        id="table-twice",
    ),
    pytest.param(
        _edit('name = "fake-model"', 'name = "fake-model'),
        (),
        "error: slmdeploy.toml:2:18: TOML syntax error: a string is not closed on this line. Close it with the quote",
        id="unclosed-string",
    ),
    pytest.param(
        _edit("version = 1", "version = 0"),
        (),
        "error: slmdeploy.toml:3: [project] version must be >= 1, not 0. version: the model's version",
        id="version-0",
    ),
    pytest.param(
        _edit("[convert]", "[generation]\ntop_p = 0.5\ntemperature = -1\n\n[convert]"),
        (),
        "error: slmdeploy.toml:10: [generation] temperature must be >= 0.0, not -1.0. temperature: sampling",
        id="temperature-negative",
    ),
    pytest.param(
        _edit("[convert]", "[generation]\nmax_length = 0\n\n[convert]"),
        (),
        "error: slmdeploy.toml:9: [generation] max_length must be >= 1, not 0. max_length: prompt plus answer",
        id="max-length-0",
    ),
    pytest.param(
        _edit('plugin = "copy"', 'plugin = "olive"'),
        ("--disable-plugin", "olive"),
        "error: slmdeploy.toml:9: the convert plugin 'olive' is disabled on the command line (--disable-plugin olive). "
        "Leave out --disable-plugin olive to use it",
        id="disabled-plugin",
    ),
    pytest.param(
        _edit('plugin = "dir"\nfolder = "registry"', 'plugin = "foundry"\ncache_dir = "runs.log/cache"'),
        (),
        "error: slmdeploy.toml:23 [register] cache_dir: Foundry Local's cache",
        id="foundry-cache-is-a-file",
    ),
    pytest.param(
        _edit('plugins = ["size"]', 'plugins = ["size", "quality"]\n\n[evaluate.quality]\ntexts = "model/weights.bin"'),
        (),
        "error: slmdeploy.toml:22 [evaluate.quality] texts:",
        id="binary-texts",
    ),
]


@pytest.mark.parametrize(("toml", "options", "expected"), BAD_PROJECT_FILES)
def test_a_bad_project_file_is_one_paragraph_and_changes_nothing(fake_project, toml, options, expected):
    project = fake_project(toml)
    (project.path / "runs.log").write_text("", encoding="utf-8")
    before = _state(project)
    for command in ("plan", "build"):
        result = project.cli(*options, command)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert _first_line(result.stderr).startswith(expected), result.stderr
        assert len(result.stderr) < 1000
    assert _state(project) == before
    assert not (project.path / "build").exists()


def test_a_project_file_that_is_not_utf8(fake_project):
    project = fake_project()
    project.file.write_bytes(project.file.read_bytes().replace(b'"fake-model"', b'"fake-mod\xe9l"'))
    result = project.cli("plan")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert _first_line(result.stderr).startswith(
        "error: slmdeploy.toml:2: the project file is not UTF-8 text: byte 0xe9 at line 2, column 17. Save the file"
    )


def built(project):
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    return project


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run", "nope"), "error: no deployed model is named 'nope'. Deployed models: fake-model-int4"),
        (("run", "fake-model-int4", "--prompt", ""), "error: --prompt is empty. Give the text to answer"),
        (("run", "fake-model-int4", "--prompt", "a " * 60), "error: the prompt is 60 words, but the model's context"),
        (("run", "fake-model-int4", "--prompt", "caf\udce9"), "error: --prompt is not UTF-8 text (byte 0xe9 at"),
    ],
    ids=["unknown-name", "empty-prompt", "too-long", "not-utf8"],
)
def test_run_rejects_a_bad_prompt(fake_project, args, expected):
    project = built(fake_project())
    before = _state(project)
    result = project.cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert _first_line(result.stderr.split("\n", 1)[-1] if "running with" in result.stderr else result.stderr)
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert _state(project) == before


def test_a_chat_answers_the_line_after_a_bad_one(fake_project):
    project = built(fake_project())
    lines = [b"caf\xe9 au lait", b"word " * 60, b"crash", b"hello world", b"/exit"]
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project.path), "--plain", "run", "fake-model-int4"]
    result = subprocess.run(command, input=b"\n".join(lines) + b"\n", capture_output=True, check=False, timeout=60)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "error: this line is not UTF-8 text (byte 0xe9 at character 4); it was not sent." in stderr
    assert "error: the prompt is 60 words, but the model's context holds 50" in stderr
    assert "failed while answering: RuntimeError('chat_session.cc:1374 native failure xxx" in stderr
    assert len(stderr) < 3000  # the crash's payload is cut short
    assert "world hello (turn 1)" in result.stdout.decode()  # the bad lines were not kept in the conversation


STAGE_FAULTS = {
    "value": ("crashed: ValueError('unexpected xxx", 2),
    "enospc": ("no space left on the disk holding", 2),
    "eacces": ("no permission to write there (Permission denied)", 2),
    "interrupt": ("interrupted: completed stages are cached", 130),
}


def _assert_reported(result, kind):
    expected, code = STAGE_FAULTS[kind]
    message = " ".join(result.stderr.split())
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert expected in message, result.stderr
    assert len(result.stderr) < 4000
    if kind == "value":
        assert "This looks like a bug" in message or "This is a bug" in message
    else:
        assert "report it" not in message
    if kind == "interrupt":
        assert "failed after" not in result.stderr
        assert "interrupted after" in result.stderr or "interrupted:" in result.stderr


@pytest.mark.parametrize("in_worker", [False, True], ids=["in-process", "in-worker"])
@pytest.mark.parametrize("kind", list(STAGE_FAULTS))
def test_a_stage_failure_is_reported_as_what_it_was(fake_project, kind, in_worker):
    toml = _edit('plugin = "fake"', f'plugin = "fake"\nfault = "{kind}"\nfault_in_worker = {str(in_worker).lower()}')
    project = fake_project(toml)
    result = project.cli("build")
    _assert_reported(result, kind)
    assert not (project.path / "registry").exists()
    leftovers = (
        list((project.path / ".slmdeploy" / "tmp").glob("*")) if (project.path / ".slmdeploy/tmp").is_dir() else []
    )
    assert leftovers == []


@pytest.mark.parametrize("kind", list(STAGE_FAULTS))
@pytest.mark.parametrize(
    ("hook", "command"),
    [
        ("slmdeploy_register_converters", ("plan",)),
        ("slmdeploy_check_project", ("plan",)),
        ("slmdeploy_template_family", ("build",)),
        ("slmdeploy_write_report", ("build",)),
        ("slmdeploy_chat_backend", ("run", "fake-model-int4", "--prompt", "hi")),
    ],
)
def test_a_hook_failure_prints_no_traceback(fake_project, monkeypatch, hook, command, kind):
    project = fake_project(ONE_VARIANT)
    if command[0] == "run":
        built(project)
    monkeypatch.setenv("FAKE_FAULT", f"{hook}:{kind}")
    result = project.cli(*command)
    _, code = STAGE_FAULTS[kind]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("error: ") <= 1
    assert len(result.stderr) < 4000
    if kind in ("enospc", "eacces"):
        assert "report it" not in result.stderr


def test_debug_shows_the_traceback(fake_project):
    project = fake_project(_edit('plugin = "fake"', 'plugin = "fake"\nfault = "value"'))
    result = project.cli("--debug", "build")
    assert result.exit_code == 2
    assert "Traceback" in result.output


def test_custom_code_not_run_is_said(tmp_path):
    from slmdeploy.model.sources import warn_custom_code

    config = {"architectures": ["LlamaForCausalLM"], "auto_map": {"AutoModelForCausalLM": "modeling_my.MyLlama"}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    said: list[str] = []
    warn_custom_code(tmp_path, said.append)
    assert said == [
        "warning: config.json's auto_map names the model's own code (modeling_my.MyLlama), which is not run: it is "
        "built as the stock LlamaForCausalLM. Set [source] trust_remote_code = true to run that code."
    ]


def _gguf_header(version: int = 3, tensors: int = 5, entries: int = 2) -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", version, tensors, entries)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"PK\x03\x04" + bytes(100), "model.gguf is not a GGUF file (it starts with b'PK\\x03\\x04', not b'GGUF')"),
        (b"GGUF\x03\x00\x00\x00garbage", "model.gguf is cut short: 15 bytes, less than a GGUF header"),
        (_gguf_header(version=7) + bytes(100), "model.gguf is GGUF version 7; the versions that can be read are 2, 3"),
        (_gguf_header(tensors=10**9) + bytes(100), "model.gguf is damaged or cut short: its header counts"),
        (_gguf_header(tensors=0) + bytes(100), "model.gguf is damaged or cut short: its header holds no tensors"),
    ],
    ids=["not-gguf", "cut-short", "version", "counts", "no-tensors"],
)
def test_a_damaged_gguf_is_refused_at_plan_time(fake_project, content, expected):
    project = fake_project(FULL_PROJECT.replace('path = "model"', 'path = "model.gguf"'))
    (project.path / "model.gguf").write_bytes(content)
    result = project.cli("plan")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    first = _first_line(result.stderr)
    assert first.startswith("error: slmdeploy.toml:6: ") and expected in first, result.stderr


def test_a_project_file_that_is_a_folder(tmp_path):
    (tmp_path / "slmdeploy.toml").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "slmdeploy", "-C", str(tmp_path), "plan"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _first_line(result.stderr).startswith(f"error: {tmp_path / 'slmdeploy.toml'} is a folder, not a project")


def test_blocking_a_plugin_that_is_not_installed_is_a_warning(fake_project):
    project = fake_project()
    result = project.cli("--disable-plugin", "olivee", "plan")
    assert result.exit_code == 0, result.output
    assert "warning: --disable-plugin olivee names 'olivee', which no installed slmdeploy plugin is called" in (
        " ".join(result.stderr.split())
    )
    assert "Installed: " in result.stderr and "olive" in result.stderr
