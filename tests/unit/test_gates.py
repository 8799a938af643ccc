"""Gates and the fallback chain, judged by the core on figures the fake evaluator reports (planted per variant)."""

from __future__ import annotations

import json
import re

from slmdeploy.execute.cache import Store

from support import FULL_PROJECT, runs

PLANTED = {"int4": {"agreement": 0.5}, "int8": {"agreement": 0.9}}


def gated(fake_project, gates: str, evaluate_extra: str = ""):
    toml = FULL_PROJECT.replace('plugins = ["size"]', f'plugins = ["size"]\n{evaluate_extra}')
    project = fake_project(toml + f"\n[evaluate.gates]\n{gates}\n")
    (project.path / "figures.json").write_text(json.dumps(PLANTED))
    return project


def flat(text):
    return " ".join(text.split())


def report(project, variant):
    return json.loads((project.path / "build" / variant / "report.json").read_text())


def registered(project):
    folder = project.path / "registry" / "fake-model"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_a_failed_gate_stops_that_variant_with_a_table_and_registers_it_nowhere(fake_project):
    project = gated(fake_project, "min_agreement = 0.8\nmax_package_bytes = 1000000")
    result = project.cli("build")
    assert result.exit_code == 2
    assert "int4 failed 1 of 2 gates, so it is not registered" in flat(result.stderr)
    assert re.search(r"\n +gate +measured +threshold\n", result.stderr)
    assert re.search(r"\n +min_agreement +0\.5 +>= 0\.8 +FAILED\n", result.stderr)
    assert re.search(r"\n +max_package_bytes +\d+ bytes +<= 1000000 bytes +ok\n", result.stderr)
    assert registered(project) == ["int8"]
    failed = report(project, "int4")
    assert failed["status"] == "failed" and failed["registered"] is None
    assert {gate["gate"]: gate["passed"] for gate in failed["gates"]} == {
        "min_agreement": False,
        "max_package_bytes": True,
    }
    assert report(project, "int8")["status"] == "passed"
    assert report(project, "int8")["units"]["package_bytes"] == "bytes"
    assert (project.path / "build" / "int4" / "report.txt").read_text().startswith("int4: failed")
    listing = project.cli("ls").stdout.splitlines()
    assert listing[1].split()[5:7] == ["failed", "-"] and listing[2].split()[5] == "passed"


def test_changing_a_threshold_rejudges_without_measuring_again(fake_project):
    project = gated(fake_project, "min_agreement = 0.8")
    assert project.cli("build").exit_code == 2
    evaluations = runs(project).count("int4 evaluate")
    project.file.write_text(project.file.read_text().replace("min_agreement = 0.8", "min_agreement = 0.4"))
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert runs(project).count("int4 evaluate") == evaluations
    assert report(project, "int4")["status"] == "passed"
    assert registered(project) == ["int4", "int8"]
    assert (project.path / "build" / "int4" / "report.txt").read_text().startswith("int4: passed")


def test_fallback_deploys_the_first_precision_that_passes(fake_project):
    project = gated(fake_project, "min_agreement = 0.8", 'fallback = ["int4", "int8"]')
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert "int4 failed its gates: building int8 instead (fallback)" in flat(result.stderr)
    assert "int4: failed its gates, fell back to int8" in result.stdout
    assert "fallback: deploying int8, the first of int4, int8 that passed its gates" in result.stdout
    assert registered(project) == ["int8"]


def test_fallback_does_not_build_what_it_does_not_need(fake_project):
    project = gated(fake_project, "min_agreement = 0.4", 'fallback = ["int4", "int8"]')
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert "int8: not built (fallback not needed)" in result.stdout
    assert not any(line.startswith("int8") for line in runs(project))
    assert registered(project) == ["int4"]


def test_when_no_precision_passes_the_build_fails_and_registers_nothing(fake_project):
    project = gated(fake_project, "min_agreement = 0.95", 'fallback = ["int4", "int8"]')
    result = project.cli("build")
    assert result.exit_code == 2
    assert "int4 failed 1 of 1 gates" in flat(result.stderr) and "int8 failed 1 of 1 gates" in flat(result.stderr)
    assert "2 of 2 variants failed" in flat(result.stderr)
    assert registered(project) == []
    assert "Traceback" not in result.output


def test_a_gate_on_a_figure_no_evaluator_reported_fails(fake_project):
    project = gated(fake_project, "min_agreement = 0.1")
    (project.path / "figures.json").write_text(json.dumps({"int4": {"agreement": 0.5}}))
    result = project.cli("build")
    assert result.exit_code == 2
    assert "not measured" in flat(result.stderr)
    assert registered(project) == ["int4"]


def test_unknown_gate_names_the_line_and_the_figures(fake_project):
    project = gated(fake_project, "min_agreemnt = 0.8")
    result = project.cli("build")
    assert result.exit_code == 2
    assert "[evaluate.gates] min_agreemnt names no figure the selected evaluators measure" in flat(result.stderr)
    assert "Did you mean 'min_agreement'?" in flat(result.stderr)
    line = project.file.read_text().splitlines().index("min_agreemnt = 0.8") + 1
    assert f"slmdeploy.toml:{line}: [evaluate.gates] min_agreemnt" in flat(result.stderr)
    assert "Traceback" not in result.output


def test_gate_threshold_must_be_a_number(fake_project):
    result = gated(fake_project, 'max_package_bytes = "big"').cli("build")
    assert result.exit_code == 2
    assert "[evaluate.gates] max_package_bytes must be a number, not 'big'" in flat(result.stderr)


def test_fallback_must_name_variants_of_the_project(fake_project):
    result = gated(fake_project, "min_agreement = 0.8", 'fallback = ["int4", "fp16"]').cli("build")
    assert result.exit_code == 2
    assert "[evaluate] fallback names 'fp16'" in flat(result.stderr)
    assert "The variants of this project: int4, int8" in flat(result.stderr)


def test_report_command_summarizes_the_latest_build(fake_project):
    project = gated(fake_project, "min_agreement = 0.8")
    project.cli("build")
    result = project.cli("report")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["figure", "int4", "int8"]
    assert "FAILED gates" in lines[1] and "passed, registered fake-model:1" in lines[1]
    assert any(line.startswith("agreement") and "0.5" in line and "0.9" in line for line in lines)
    assert "int4: gate min_agreement failed: measured 0.5, needs >= 0.8" in result.stdout
    as_json = json.loads(project.cli("report", "--json").stdout)
    assert [item["variant"] for item in as_json] == ["int4", "int8"]


def test_report_without_a_build_says_what_to_do(fake_project):
    result = fake_project().cli("report")
    assert result.exit_code == 2
    assert "no evaluated variant" in flat(result.stderr) and "slmdeploy build" in flat(result.stderr)


def test_shared_entry_is_made_once(tmp_path):
    store = Store(tmp_path / "state")
    made = []

    def make(folder):
        made.append(folder)
        folder.joinpath("figure.txt").write_text("42")

    first = store.shared("reference", {"source": "abc"}, make)
    second = store.shared("reference", {"source": "abc"}, make)
    other = store.shared("reference", {"source": "def"}, make)
    assert first == second != other
    assert len(made) == 2
    assert (first / "figure.txt").read_text() == "42"


def test_a_package_that_no_longer_passes_is_unregistered(fake_project):
    project = gated(fake_project, "min_agreement = 0.4")
    assert project.cli("build").exit_code == 0
    assert registered(project) == ["int4", "int8"]
    project.file.write_text(project.file.read_text().replace("min_agreement = 0.4", "min_agreement = 0.8"))
    result = project.cli("build")
    assert result.exit_code == 2
    assert "int4: removed" in result.stderr and "(it no longer passes its gates)" in result.stderr
    assert registered(project) == ["int8"]
    assert "int4 evaluate" in runs(project) and runs(project).count("int4 evaluate") == 1


def test_a_gate_on_a_figure_only_adapter_variants_measure_judges_only_them():
    from slmdeploy.config.gates import Gate
    from slmdeploy.execute.verdicts import judge
    from slmdeploy.stages import Metric

    metrics = {"agreement": Metric("top-1"), "adapter_cost": Metric("an adapter's cost", "x", adapter_only=True)}
    gates = (Gate("agreement", "min", 0.5), Gate("adapter_cost", "min", 0.8))
    base = judge(gates, {"agreement": 0.9}, metrics)
    assert [(result.gate.key, result.passed) for result in base] == [("min_agreement", True)]
    adapter = judge(gates, {"agreement": 0.9, "adapter_cost": 0.7}, metrics, adapter=True)
    assert [(result.gate.key, result.passed) for result in adapter] == [
        ("min_agreement", True),
        ("min_adapter_cost", False),
    ]
    assert not judge(gates, {"agreement": 0.9}, metrics, adapter=True)[1].passed  # not measured: failed


def test_a_gate_on_an_adapter_figure_without_runtime_adapters_is_refused_when_planned(fake_project):
    toml = FULL_PROJECT.replace('plugins = ["size"]', 'plugins = ["size", "figures"]')
    project = fake_project(toml + "\n[evaluate.gates]\nmin_adapter_cost = 0.8\n")
    result = project.cli("plan")
    assert result.exit_code == 2, result.output
    said = flat(result.stderr)
    line = project.file.read_text().splitlines().index("min_adapter_cost = 0.8") + 1
    assert (
        f"slmdeploy.toml:{line}: [evaluate.gates] min_adapter_cost bounds adapter_cost, which only a runtime "
        "adapter's variant measures, and this project has none"
    ) in said
    assert 'adapters = "runtime"' in said and "Traceback" not in result.output
