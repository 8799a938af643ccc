"""The incremental pipeline: what runs, what is cached, and what a failed or interrupted build leaves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from support import FULL_PROJECT, runs


def built(project, *args):
    result = project.cli("build", *args)
    assert result.exit_code == 0, result.output
    return result


def test_build_runs_every_stage_and_shares_the_conversion(fake_project):
    project = fake_project()
    result = built(project)
    lines = runs(project)
    assert lines[0] == "int4 convert" and lines.count("int4 convert") == 1
    for variant in ("int4", "int8"):
        steps = [line.split(" ", 1)[1] for line in lines[1:] if line.startswith(variant)]
        assert steps == [f"quantize {variant}", "template", "evaluate", "register"]
    assert "int8: built (4 run, 1 cached)" in result.stdout
    for variant in ("int4", "int8"):
        folder = project.path / "build" / variant
        assert (folder / "model" / "inference_model.json").is_file()
        assert (folder / "model" / "precision.txt").read_text() == variant
        assert (folder / "report.json").is_file()
        assert (project.path / "registry" / "fake-model" / variant / "model.onnx").is_file()


def test_no_op_rebuild_runs_nothing(fake_project):
    project = fake_project()
    built(project)
    before = runs(project)
    result = built(project)
    assert runs(project) == before
    assert "int4: up to date (0 run, 5 cached)" in result.stdout
    assert "convert (copy): cached" in result.stderr


def test_changing_only_quantize_reuses_the_conversion(fake_project):
    project = fake_project()
    built(project)
    project.file.write_text(project.file.read_text().replace('plugin = "fake"', 'plugin = "fake"\nblock_size = 64'))
    before = len(runs(project))
    built(project)
    new = runs(project)[before:]
    assert not any("convert" in line for line in new)
    assert "int4 quantize int4" in new and "int8 quantize int8" in new
    manifest = json.loads((project.path / "build" / "int4" / "manifest.json").read_text())
    stages = {stage["stage"]: stage for stage in manifest["stages"]}
    assert stages["convert"]["cached"] is True
    assert stages["quantize"]["cached"] is False
    assert stages["quantize"]["options"]["block_size"] == 64


def test_changing_only_template_reuses_convert_and_quantize(fake_project):
    project = fake_project()
    built(project)
    project.file.write_text(
        project.file.read_text().replace('family = "auto"', 'family = "fakefam"\nsystem_prompt = "Be brief."')
    )
    before = len(runs(project))
    built(project)
    new = runs(project)[before:]
    assert sorted(new) == sorted(
        f"{v} {stage}" for v in ("int4", "int8") for stage in ("template", "evaluate", "register")
    )


def test_changing_generation_reruns_from_the_template(fake_project):
    project = fake_project(FULL_PROJECT + "\n[generation]\ntemperature = 0.2\n")
    built(project)
    project.file.write_text(project.file.read_text().replace("temperature = 0.2", "temperature = 0.3"))
    before = len(runs(project))
    built(project)
    assert sorted(runs(project)[before:])[0] == "int4 evaluate"
    assert "int4 template" in runs(project)[before:] and not any("quantize" in line for line in runs(project)[before:])
    info = json.loads((project.path / "build" / "int4" / "model" / "inference_model.json").read_text())
    assert info["ModelConfig"]["temperature"] == 0.3


def test_editing_a_path_option_file_reruns_its_stage(fake_project):
    project = fake_project(
        FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\ncalibration = "calib.txt"'),
        files={"calib.txt": "one"},
    )
    built(project)
    (project.path / "calib.txt").write_text("two")
    before = len(runs(project))
    built(project)
    assert "int4 quantize int4" in runs(project)[before:]
    assert not any("convert" in line for line in runs(project)[before:])


def test_changing_the_source_reruns_everything(fake_project):
    project = fake_project()
    built(project)
    (project.path / "model" / "weights.bin").write_bytes(b"new weights")
    before = len(runs(project))
    built(project)
    assert runs(project)[before] == "int4 convert"


def test_manifest_records_how_the_artifact_was_made(fake_project):
    project = fake_project()
    built(project)
    manifest = json.loads((project.path / "build" / "int8" / "manifest.json").read_text())
    assert manifest["project"] == "fake-model" and manifest["variant"] == "int8"
    assert [stage["table"] for stage in manifest["stages"]] == [
        "convert",
        "quantize",
        "template",
        "evaluate.size",
        "register",
    ]
    for stage in manifest["stages"]:
        assert len(stage["key"]) == 64 and len(stage["output_digest"]) == 64
        assert stage["plugin_version"].startswith("local-")
        assert stage["duration_s"] >= 0
    assert manifest["stages"][0]["cached"] is True  # made for int4 first
    entry = project.path / ".slmdeploy" / "cache" / manifest["stages"][1]["key"]
    assert (entry / "out" / "precision.txt").read_text() == "int8"


def test_failed_stage_names_the_plugin_and_caches_nothing(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "copy"', 'plugin = "copy"\nfail = true'))
    result = project.cli("build")
    assert result.exit_code == 2
    assert "convert plugin 'copy' failed: the fake converter was told to fail. Set fail = false." in " ".join(
        result.stderr.split()
    )
    assert not list((project.path / ".slmdeploy" / "cache").glob("*"))
    assert not list((project.path / ".slmdeploy" / "tmp").glob("*"))
    assert not (project.path / "build").exists()


def test_crashing_plugin_is_reported_without_traceback(fake_project):
    plugin_bug = 'plugin = "fake"\ncalibration = "calib.txt"'
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', plugin_bug), files={"calib.txt": "x"})
    source = (project.path / "slmdeploy_plugins.py").read_text()
    (project.path / "slmdeploy_plugins.py").write_text(
        source.replace('_log(self, f"quantize {self.options.precision}")', "1 / 0")
    )
    result = project.cli("build")
    assert result.exit_code == 2
    assert "quantize plugin 'fake' crashed: ZeroDivisionError" in result.stderr
    assert "Traceback" not in result.output
    debug = project.cli("--debug", "build")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr


def test_failed_gate_registers_nothing(fake_project):
    project = fake_project(FULL_PROJECT + "\n[evaluate.size]\nmax_bytes = 10\n")
    result = project.cli("build")
    assert result.exit_code == 2
    assert "evaluation 'size' failed: size" in result.stderr
    assert not (project.path / "registry").exists()
    assert "int4 register" not in runs(project)


def test_registration_removed_outside_is_redone(fake_project):
    project = fake_project()
    built(project)
    registered = project.path / "registry" / "fake-model" / "int4"
    for file in registered.iterdir():
        file.unlink()
    registered.rmdir()
    before = len(runs(project))
    built(project)
    assert runs(project)[before:] == ["int4 register"]
    assert registered.is_dir()


def test_plan_says_a_registration_removed_outside_will_be_redone(fake_project):
    project = fake_project()
    built(project)
    shutil.rmtree(project.path / "registry" / "fake-model" / "int4")
    plan = json.loads(project.cli("plan", "--json").stdout)
    int4, int8 = ({step["stage"]: step for step in variant["steps"]} for variant in plan["variants"])
    assert int4["register"]["status"] == "run" and "changed outside" in int4["register"]["note"]
    assert int4["register"]["key"] and int4["template"]["status"] == "cached"
    assert int8["register"]["status"] == "cached" and "note" not in int8["register"]
    text = project.cli("plan").stdout
    assert "changed outside the cache: build makes it again" in text
    before = len(runs(project))
    built(project)
    assert runs(project)[before:] == ["int4 register"]


def test_plan_shows_cached_and_pending_steps(fake_project):
    project = fake_project()
    first = json.loads(project.cli("plan", "--json").stdout)
    statuses = [step["status"] for step in first["variants"][0]["steps"]]
    assert statuses == ["run"] * 5
    assert first["variants"][0]["steps"][2]["plugin"] == "auto"
    assert first["variants"][0]["steps"][2]["family"] == "fakefam"  # the family auto will pick, from the source
    assert "auto: fakefam" in project.cli("plan").stdout
    built(project)
    project.file.write_text(project.file.read_text().replace('plugin = "fake"', 'plugin = "fake"\nblock_size = 64'))
    second = json.loads(project.cli("plan", "--json").stdout)
    steps = second["variants"][0]["steps"]
    assert [step["status"] for step in steps] == ["cached", "run", "run", "run", "run"]
    text = project.cli("plan").stdout
    assert "convert" in text and "cached" in text and "int8:" in text
    assert len(runs(project)) == 9  # plan ran nothing


def test_clean_removes_outputs(fake_project):
    project = fake_project()
    built(project)
    result = project.cli("clean")
    assert result.exit_code == 0
    assert not (project.path / "build").exists()
    assert not (project.path / ".slmdeploy" / "cache").exists()
    assert (project.path / "model" / "weights.bin").exists()


def _start_build(project, *args, stderr=subprocess.PIPE):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "slmdeploy", "-C", str(project.path), "--plain", "build", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        # SIGINT as a terminal's Ctrl-C delivers it, whatever this test run inherited: started as a background job
        # of a shell without job control (`.ci/run &` in a script), it has SIGINT ignored, and so would the build.
        preexec_fn=_default_sigint,  # noqa: PLW1509 - the test process starts no threads before this
    )


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_killed_build_leaves_no_partial_entry_and_the_next_build_continues(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "copy"', 'plugin = "copy"\nsleep = 30.0'))
    process = _start_build(project)
    tmp = project.path / ".slmdeploy" / "tmp"
    _wait_for(lambda: any(tmp.glob("*/out/progress")))
    process.kill()
    process.wait()
    assert not list((project.path / ".slmdeploy" / "cache").glob("*"))
    project.file.write_text(project.file.read_text().replace("sleep = 30.0", "sleep = 0.0"))
    built(project)
    assert not list(tmp.glob("*"))
    assert (project.path / "build" / "int8" / "model" / "model.onnx").is_file()


def test_interrupted_build_says_what_is_kept(fake_project):
    project = fake_project(
        FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\ncalibration = "c.txt"').replace(
            'plugin = "copy"', 'plugin = "copy"\nsleep = 30.0'
        ),
        files={"c.txt": "x"},
    )
    process = _start_build(project)
    _wait_for(lambda: any((project.path / ".slmdeploy" / "tmp").glob("*/out/progress")))
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted: completed stages are cached" in stderr
    assert "Traceback" not in stderr
    assert not list((project.path / ".slmdeploy" / "tmp").glob("*"))


def test_concurrent_builds_are_serialized(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "copy"', 'plugin = "copy"\nhold_until = "release"'))
    first = _start_build(project)
    _wait_for(lambda: any((project.path / ".slmdeploy" / "tmp").glob("*/out/progress")))
    second_err = project.path.parent / "second.err"
    with second_err.open("w") as stderr:
        second = _start_build(project, stderr=stderr)
        _wait_for(lambda: "waiting for another slmdeploy process" in second_err.read_text())
    (project.path / "release").touch()  # the first build's conversion held the lock until now
    out_second, _ = second.communicate(timeout=60)
    err_second = second_err.read_text()
    first.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, err_second
    assert "waiting for another slmdeploy process" in err_second
    assert "int4: up to date" in out_second
    assert [line for line in runs(project) if "convert" in line] == ["int4 convert"]


def test_distinct_steps_of_a_level_run_side_by_side(fake_project):
    slow = FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\ncalibration = "c.txt"')
    project = fake_project(slow, files={"c.txt": "x"})
    plugin_file = project.path / "slmdeploy_plugins.py"
    original = plugin_file.read_text()
    # Each quantization waits until the other has started (at most 60 s, so a serial run still ends): run side by
    # side, both start before either finishes, however slowly the machine starts the worker processes.
    plugin_file.write_text(
        original.replace(
            '        _log(self, f"quantize {self.options.precision}")',
            '        _log(self, f"quantize {self.options.precision} start")\n'
            '        other = {"int4": "int8", "int8": "int4"}[self.options.precision]\n'
            '        log, deadline = self.context.project_dir / "runs.log", time.monotonic() + 60\n'
            '        while f"quantize {other} start" not in log.read_text() and time.monotonic() < deadline:\n'
            "            time.sleep(0.02)\n"
            '        _log(self, f"quantize {self.options.precision}")',
        )
    )
    built(project, "--jobs", "2")
    lines = runs(project)
    starts = [lines.index(f"{v} quantize {v} start") for v in ("int4", "int8")]
    ends = [lines.index(f"{v} quantize {v}") for v in ("int4", "int8")]
    assert max(starts) < min(ends), lines  # both started before either finished
    project.cli("clean")
    (project.path / "runs.log").unlink()
    plugin_file.write_text(original.replace('        _log(self, f"quantize {self.options.precision}")',
                                            '        _log(self, f"quantize {self.options.precision} start")\n'
                                            '        _log(self, f"quantize {self.options.precision}")'))  # fmt: skip
    built(project, "--jobs", "1")
    serial = runs(project)
    assert serial.index("int4 quantize int4") < serial.index("int8 quantize int8 start"), serial


def test_a_failed_variant_does_not_stop_the_others(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\nfail_for = "int4"'))
    result = project.cli("build")
    assert result.exit_code == 2
    assert "int4: failed" in result.stdout and "int8: built" in result.stdout
    message = " ".join(result.stderr.split())
    assert "int4: quantize plugin 'fake' failed: told to fail for int4" in message
    assert "1 of 2 variants failed (int4)" in message
    assert (project.path / "build" / "int8" / "manifest.json").is_file()
    assert not (project.path / "build" / "int4").exists()
    assert (project.path / "registry" / "fake-model" / "int8").is_dir()
    assert not (project.path / "registry" / "fake-model" / "int4").exists()
