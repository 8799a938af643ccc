"""``[quantize] search`` on a tiny model: three Olive candidates built and evaluated, the fastest that meets the
targets deployed (here: chosen, since nothing registers), and the report's table and Pareto plot."""

from __future__ import annotations

import json

import pytest

from slmdeploy.testing import run_slmdeploy
from slmdeploy.testing.models import make_tiny_model

pytest.importorskip("matplotlib")

PROJECT = """\
[project]
name = "tiny-search"

[source]
path = "model"

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
search = { min_top1 = 0.5, max_size_mb = 1000, candidates = ["int4", "int4-rtn", "int8"] }

[template]
family = "auto"

[evaluate]
plugins = ["benchmark", "quality"]

[evaluate.benchmark]
prompt_lengths = [16]
new_tokens = 8
repeats = 1
compare_source = false
thread_sweep = false

[evaluate.quality]
soak_requests = 0
max_new_tokens = 8
"""


def test_search_picks_the_fastest_candidate_that_meets_the_targets(tmp_path):
    make_tiny_model(tmp_path / "model")
    (tmp_path / "slmdeploy.toml").write_text(PROJECT)
    plan = run_slmdeploy(tmp_path, "plan")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("search: 3 candidates, cheapest first")
    result = run_slmdeploy(tmp_path, "--plain", "build")
    reports = {
        name: json.loads((tmp_path / "build" / name / "report.json").read_text())
        for name in ("int4", "int4-rtn", "int8")
    }
    passing = {name: report for name, report in reports.items() if report["status"] == "passed"}
    assert passing, result.stdout + result.stderr
    fastest = max(passing, key=lambda name: passing[name]["metrics"]["decode_tokens_per_s"])
    assert result.returncode == 0, result.stderr
    assert f"search: deploying {fastest}, the fastest decoder" in result.stdout
    assert {report["search"]["chosen"] for report in reports.values()} == {fastest}
    folder = tmp_path / "build" / fastest
    assert (folder / "plots" / "search.png").stat().st_size > 10_000
    markdown = (folder / "report.md").read_text()
    assert "## Quantization search" in markdown and f"| {fastest} (chosen) |" in markdown
