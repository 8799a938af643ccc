"""[runtime]: the thread count every package carries, resolved for the machine that builds or runs it."""

from __future__ import annotations

import json
import os

import pytest

from slmdeploy.config.project import RuntimeTable
from slmdeploy.host.manager import get_plugin_manager
from slmdeploy.host.registry import Registry
from slmdeploy.machine import available_cores, resolve_threads
from slmdeploy.plugin import OnnxModel
from slmdeploy.plugin.genai import session_options

from support import FULL_PROJECT


def test_automatic_threads_are_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert available_cores() == 3
    assert resolve_threads(0) == resolve_threads(None) == 3
    assert resolve_threads(1) == 1
    assert RuntimeTable().resolved() == {"threads": 3, "prefill_chunk": 256}
    assert RuntimeTable(threads=7, prefill_chunk=0).resolved() == {"threads": 7, "prefill_chunk": 0}


def test_session_options_name_both_pools(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert session_options(0) == {"intra_op_num_threads": 2, "inter_op_num_threads": 1, "enable_mem_pattern": False}
    assert session_options(4)["intra_op_num_threads"] == 4


@pytest.mark.parametrize(("threads", "expected"), [(None, "auto"), (3, 3)])
def test_the_template_stage_writes_the_thread_count(threads, expected, run_stage, tmp_path, monkeypatch):
    from test_templates import fixture, model_folder

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    folder = model_folder(tmp_path, fixture("qwen2.5"))
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["decoder"] = {"session_options": {"log_id": "onnxruntime-genai"}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    family = Registry(get_plugin_manager(disabled=["mistral"])).get("template", "qwen").cls
    tables = {} if threads is None else {"runtime": {"threads": threads}}
    package = run_stage(family, OnnxModel(folder), tables=tables)
    written = json.loads((package.path / "genai_config.json").read_text())["model"]["decoder"]["session_options"]
    assert written == {
        "log_id": "onnxruntime-genai",  # the builder's options are kept
        "intra_op_num_threads": 6 if expected == "auto" else expected,
        "inter_op_num_threads": 1,
        "enable_mem_pattern": False,
    }


@pytest.mark.parametrize(("chunk", "expected"), [(None, 256), (64, 64), (0, None)])
def test_the_template_stage_writes_the_prefill_chunk(chunk, expected, run_stage, tmp_path):
    """[runtime] prefill_chunk is onnxruntime-genai's search.chunk_size; 0 leaves none (one step per prompt), also
    when the model builder had written one."""
    from test_templates import fixture, model_folder

    folder = model_folder(tmp_path, fixture("qwen2.5"))
    config = json.loads((folder / "genai_config.json").read_text())
    config["search"] = {**config.get("search", {}), "chunk_size": 512}
    (folder / "genai_config.json").write_text(json.dumps(config))
    family = Registry(get_plugin_manager(disabled=["mistral"])).get("template", "qwen").cls
    tables = {"runtime": RuntimeTable(threads=1, **({} if chunk is None else {"prefill_chunk": chunk})).resolved()}
    package = run_stage(family, OnnxModel(folder), tables=tables)
    written = json.loads((package.path / "genai_config.json").read_text())["search"]
    assert written.get("chunk_size") == expected


def test_a_negative_thread_count_is_refused_at_its_line(fake_project):
    project = fake_project(FULL_PROJECT + "\n[runtime]\nthreads = -2\n")
    result = project.cli("plan")
    assert result.exit_code == 2 and "Traceback" not in result.output
    written = (project.path / "slmdeploy.toml").read_text().splitlines()
    assert f"slmdeploy.toml:{written.index('threads = -2') + 1}:" in result.stderr
    assert "threads" in result.stderr and "-2" in result.stderr


def template_status(project) -> set[str]:
    result = project.cli("plan", "--json")
    assert result.exit_code == 0, result.output
    variants = json.loads(result.stdout)["variants"]
    return {row["status"] for variant in variants for row in variant["steps"] if row["stage"] == "template"}


def test_a_package_built_for_other_cores_is_built_again(fake_project, monkeypatch):
    """A cached template written for 2 cores is not reused on a machine with 4: its package says 2."""
    project = fake_project()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert project.cli("build").exit_code == 0
    assert template_status(project) == {"cached"}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert template_status(project) == {"run"}
