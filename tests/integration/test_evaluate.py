"""The evaluate stage on a tiny model: every checklist item measured, each gate failing when planted, the fallback,
the cache, the report and its plots."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy
from slmdeploy.testing.models import make_tiny_model

pytest.importorskip("matplotlib")

PROJECT = """\
[project]
name = "tiny-eval"
version = 1

[source]
path = "model"

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
precision = ["int4", "int8"]

[template]
family = "auto"

[evaluate]
plugins = ["benchmark", "quality"]
{evaluate}

[evaluate.benchmark]
prompt_lengths = [16, 64, 128]
new_tokens = 8
repeats = 2

[evaluate.quality]
soak_requests = 30
soak_max_tokens = 8
max_new_tokens = 16
domain = "domain.jsonl"

[evaluate.gates]
{gates}

[register]
plugin = "foundry"
cache_dir = "foundry-cache"
smoke_max_tokens = 8
"""

DOMAIN = [
    {"id": "capital", "prompt": "What is the capital of France?", "contains": "Paris"},
    {"id": "json", "prompt": "Reply in JSON.", "json_schema": {"type": "object", "required": ["answer"]}},
    {"id": "anything", "prompt": "Say something.", "regex": "(?s).*"},
]
EDGE_CASES = {"empty", "whitespace", "overlong", "invalid_utf8", "control_characters", "long_word", "emoji_cjk"}


def write_project(folder: Path, gates: str = "", evaluate: str = "") -> None:
    (folder / "slmdeploy.toml").write_text(PROJECT.format(gates=gates, evaluate=evaluate))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate") / "project"
    folder.mkdir()
    make_tiny_model(folder / "model")
    (folder / "domain.jsonl").write_text("\n".join(json.dumps(item) for item in DOMAIN) + "\n")
    write_project(folder, gates="min_top1_agreement = 0.0")
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def report(folder: Path, variant: str) -> dict:
    return json.loads((folder / "build" / variant / "report.json").read_text())


def variant_of(built: Path, tmp_path: Path, gates: str, evaluate: str = "") -> Path:
    """A copy of the built project (its cache too) with other gates and a Foundry cache of its own."""
    folder = tmp_path / "project"
    shutil.copytree(built, folder, ignore=shutil.ignore_patterns("foundry-cache", "build"))
    write_project(folder, gates=gates, evaluate=evaluate)
    return folder


def registered(folder: Path) -> list[str]:
    """The models in the project's Foundry Local cache."""
    return sorted(
        json.loads(path.read_text())["Name"] for path in (folder / "foundry-cache").rglob("inference_model.json")
    )


def test_benchmark_measures_package_and_source_at_each_length(built):
    bench = json.loads((built / "build" / "int4" / "benchmark.json").read_text())
    for runtime in ("package", "source"):
        rows = bench[runtime]["lengths"]
        assert [row["prompt_tokens"] for row in rows] == [16, 64, 128]
        for row in rows:
            assert row["ttft_ms"] > 0 and row["decode_tokens_per_s"] > 0 and row["prompt_tokens_per_s"] > 0
            assert len(row["runs"]) == 2  # the warm-up run is not among the measured ones
        assert bench[runtime]["peak_rss_mb"] >= bench[runtime]["rss_loaded_mb"] > 10
        assert bench[runtime]["load_s"] > 0
    metrics = report(built, "int4")["metrics"]
    assert metrics["size_mb"] < report(built, "int8")["metrics"]["size_mb"]
    package, source = bench["package"]["lengths"], bench["source"]["lengths"]
    expected = min(r["decode_tokens_per_s"] for r in package) / min(r["decode_tokens_per_s"] for r in source)
    assert metrics["decode_speedup"] == pytest.approx(expected)
    assert metrics["memory_ratio"] == pytest.approx(bench["package"]["peak_rss_mb"] / bench["source"]["peak_rss_mb"])
    decode = [row["decode_tokens_per_s"] for row in package]
    assert metrics["decode_drop"] == pytest.approx(max(1 - speed / decode[0] for speed in decode))


def test_quality_checklist_on_each_variant(built):
    for variant in ("int4", "int8"):
        quality = json.loads((built / "build" / variant / "quality.json").read_text())
        fidelity = quality["fidelity"]
        assert fidelity["texts"] == 4 and fidelity["tokens"] > 100
        assert 0 <= fidelity["top1_agreement"] <= 1 and fidelity["mean_kl"] >= 0
        assert fidelity["perplexity"] > 1 and fidelity["source_perplexity"] > 1
        domain = {item["id"]: item for item in quality["answers"]["domain"]}
        assert domain["capital"]["problems"] == ["does not contain 'Paris'"]  # a random-weight model
        assert domain["json"]["problems"] == ["is not JSON"]
        assert domain["anything"]["problems"] == []
        for item in domain.values():  # max_new_tokens = 16: an answer cut at 16 tokens, or one its stop token ended
            assert (item["finish"], item["tokens"] == 16) in {("length", True), ("stop", False)}, item
        assert len(quality["soak"]["rss_mb"]) == 30 and math.isfinite(quality["soak"]["growth_mb"])
        cases = {case["case"]: case for case in quality["edge_cases"]}
        assert set(cases) == EDGE_CASES
        assert cases["overlong"]["outcome"] == "error" and "exceeds max length" in cases["overlong"]["message"]
        assert all(case["outcome"] in ("answer", "error") and case["problem"] is None for case in cases.values())
        metrics = report(built, variant)["metrics"]
        assert metrics["domain_pass_rate"] == pytest.approx(1 / 3)
        assert metrics["edge_case_failures"] == 0


def test_report_files_and_plots(built):
    for variant in ("int4", "int8"):
        folder = built / "build" / variant
        markdown = (folder / "report.md").read_text()
        for heading in (
            "## Gates",
            "## Speed by prompt length",
            "## Fidelity",
            "## Domain answers: 1 of 3 pass",
            "## Soak: 30 requests",
            "## Edge cases",
        ):
            assert heading in markdown
        import matplotlib.image

        for name in ("speed", "memory", "fidelity"):
            image = matplotlib.image.imread(folder / "plots" / f"{name}.png")
            assert image.shape[0] > 300 and image.shape[1] > 500
    summary = run_slmdeploy(built, "report")
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.splitlines()[0].split() == ["figure", "int4", "int8"]
    assert str(built / "build" / "int4" / "plots" / "speed.png") in summary.stdout


def test_evaluation_is_cached_and_gates_are_rejudged_without_measuring(built, tmp_path):
    folder = variant_of(built, tmp_path, gates="max_ttft_ms = 100000")
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate.benchmark (benchmark): cached" in result.stderr
    assert "evaluate.quality (quality): cached" in result.stderr
    text = (folder / "slmdeploy.toml").read_text().replace("soak_requests = 30", "soak_requests = 12")
    (folder / "slmdeploy.toml").write_text(text)
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate.benchmark (benchmark): cached" in result.stderr
    assert "int4: evaluate.quality (quality): done" in result.stderr
    assert len(json.loads((folder / "build" / "int4" / "quality.json").read_text())["soak"]["rss_mb"]) == 12


def test_each_gate_fails_when_planted_and_nothing_is_registered(built, tmp_path):
    from slmdeploy_evaluate.benchmark import Benchmark
    from slmdeploy_evaluate.quality import Quality

    measured = report(built, "int4")["metrics"]
    lines = []
    figures = {**Benchmark.METRICS, **Quality.METRICS}
    adapters_only = {name for name, metric in figures.items() if metric.adapter_only}  # a runtime adapter's figures
    assert adapters_only == {"adapter_decode_ratio", "adapter_prefill_ratio"} and not adapters_only & set(measured)
    for name, metric in figures.items():
        if metric.adapter_only:
            continue
        value = measured[name]
        # a threshold just out of reach of what was measured: above it for a minimum, below it for a maximum
        lines.append(
            f"min_{name} = {value + abs(value) + 1}"
            if metric.higher_is_better
            else f"max_{name} = {value - abs(value) - 1}"
        )
    folder = variant_of(built, tmp_path, gates="\n".join(lines))
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for line in lines:
        gate = line.split(" = ")[0]
        assert any(row.split()[:1] == [gate] and row.rstrip().endswith("FAILED") for row in result.stderr.splitlines())
    assert f"int4 failed {len(lines)} of {len(lines)} gates, so it is not registered" in " ".join(result.stderr.split())
    assert registered(folder) == []
    assert report(folder, "int4")["status"] == "failed"


def test_fallback_deploys_int8_when_int4_misses_a_gate(built, tmp_path):
    kl4, kl8 = (report(built, variant)["metrics"]["mean_kl"] for variant in ("int4", "int8"))
    assert kl8 < kl4
    threshold = math.sqrt(kl4 * kl8) if kl8 > 0 else kl4 / 2
    folder = variant_of(built, tmp_path, gates=f"max_mean_kl = {threshold}", evaluate='fallback = ["int4", "int8"]')
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int4 failed its gates: building int8 instead (fallback)" in result.stderr
    assert "fallback: deploying int8, the first of int4, int8 that passed its gates" in result.stdout
    assert registered(folder) == ["tiny-eval-int8"]
    assert report(folder, "int8")["registered"] == "tiny-eval-int8:1"


def test_no_precision_passing_fails_with_the_table_and_registers_nothing(built, tmp_path):
    folder = variant_of(built, tmp_path, gates="min_top1_agreement = 1.5", evaluate='fallback = ["int4", "int8"]')
    result = run_slmdeploy(folder, "--plain", "build")
    assert result.returncode == 2
    flat = " ".join(result.stderr.split())
    assert "int4 failed 1 of 1 gates" in flat and "int8 failed 1 of 1 gates" in flat
    assert "min_top1_agreement" in result.stderr and ">= 1.5" in result.stderr
    assert registered(folder) == []


def test_bad_domain_line_is_reported_with_file_and_line_before_building(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "model").mkdir()
    (folder / "domain.jsonl").write_text('{"prompt": "hi", "contains": "x"}\n{"prompt": "hi", "regex": "("}\n')
    write_project(folder)
    result = run_slmdeploy(folder, "build")
    assert result.returncode == 2
    flat = " ".join(result.stderr.split())
    assert f'{folder / "domain.jsonl"}:2: "regex" is not a valid regular expression' in flat
    assert "Traceback" not in result.stderr and not (folder / "build").exists()


PLANTED_RUNTIME = textwrap.dedent(
    """
    import os, signal, time

    def crash(task, progress):
        os.kill(os.getpid(), signal.SIGSEGV)

    def hang(task, progress):
        time.sleep(600)
    """
)


@pytest.mark.parametrize(("function", "outcome", "problem"), [("crash", "crash", "crashed"), ("hang", "hang", "hung")])
def test_an_edge_case_that_crashes_or_hangs_the_runtime_is_caught(tmp_path, monkeypatch, function, outcome, problem):
    from slmdeploy.plugin import StageContext
    from slmdeploy_evaluate.checks import edge_verdict
    from slmdeploy_evaluate.quality import Quality, QualityOptions

    (tmp_path / "planted_runtime.py").write_text(PLANTED_RUNTIME)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    class Planted(Quality):
        EDGE_WORKER = f"planted_runtime:{function}"

    (tmp_path / "scratch").mkdir()
    context = StageContext(
        tmp_path, "planted", 1, "int4", {}, lambda line: None, tmp_path / "scratch", tmp_path / "logs"
    )
    # The timeout counts from the worker's start, interpreter included: a hang is a hang whatever the machine's
    # start-up time, but a crash needs room to start and crash before it would be taken for a hang.
    timeout = 3.0 if function == "hang" else 120.0
    found = Planted(QualityOptions(edge_timeout_s=timeout), context).run_edge_case({"content": "hello"})
    assert found["outcome"] == outcome
    assert problem in edge_verdict(found["outcome"], None)


def test_plugin_authors_can_run_an_evaluator_with_run_stage(built, run_stage):
    from slmdeploy.plugin import DeployPackage, SourceModel
    from slmdeploy_evaluate.quality import Quality

    package = DeployPackage(built / "build" / "int8" / "model", precision="int8")
    report = run_stage(Quality, package, {"soak_requests": 5}, source=SourceModel(built / "model"))
    assert report.passed and report.summary["metrics"]["top1_agreement"] > 0.9
    assert len(json.loads((report.path / "quality.json").read_text())["soak"]["rss_mb"]) == 5
