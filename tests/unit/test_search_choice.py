"""``[quantize] search``: candidate variants from the quantizer's plugin, judged on the figures the fake evaluators
report (planted per variant), the best passing one deployed; and the choice on its own."""

from __future__ import annotations

import json

import pytest

from slmdeploy.candidates import QuantizeSearch
from slmdeploy.search.choice import Measured, choose

from support import FULL_PROJECT, runs

PLANTED = {
    "int4-a": {"top1_agreement": 0.70, "size_mb": 90, "decode_tokens_per_s": 160},
    "int4-b": {"top1_agreement": 0.92, "size_mb": 110, "decode_tokens_per_s": 120},
    "int8": {"top1_agreement": 0.97, "size_mb": 270, "decode_tokens_per_s": 100},
}


def searching(fake_project, search: str, planted=None, extra: str = ""):
    toml = FULL_PROJECT.replace('precision = ["int4", "int8"]', f"search = {search}\n{extra}")
    toml = toml.replace('plugins = ["size"]', 'plugins = ["size", "figures"]')
    project = fake_project(toml)
    (project.path / "figures.json").write_text(json.dumps(planted or PLANTED))
    return project


def flat(text):
    return " ".join(text.split())


def registered(project):
    folder = project.path / "registry" / "fake-model"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def report(project, variant):
    return json.loads((project.path / "build" / variant / "report.json").read_text())


def test_plan_lists_the_candidates_cheapest_first_with_their_notes(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.9 }")
    result = project.cli("plan")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "search: 3 candidates, cheapest first; deploys the fastest decoder that meets top-1 >= 0.9"
    assert [line for line in lines if not line.startswith(" ")][1:] == [
        "int4-a:  int4, tagged a",
        "int4-b:  int4, tagged b",
        "int8:  int8",
    ]
    document = json.loads(project.cli("plan", "--json").stdout)
    assert document["search"]["min_top1"] == 0.9 and document["search"]["notes"]["int8"] == "int8"


def test_search_deploys_the_fastest_candidate_that_meets_the_targets(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.9 }")
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert registered(project) == ["int4-b"]
    assert "search: deploying int4-b, the fastest decoder of the candidates that met the targets" in result.stdout
    assert "int4-a: missed the search's targets or gates" in result.stdout
    assert "int8: up to date" in result.stdout or "int8: built" in result.stdout
    assert "(a candidate, not deployed)" in result.stdout and "(chosen by the search)" in result.stdout
    assert [line.split()[1] for line in runs(project) if line.endswith("register")] == ["register"]
    chosen = report(project, "int4-b")
    assert chosen["search"]["chosen"] == "int4-b" and chosen["search"]["candidates"] == ["int4-a", "int4-b", "int8"]
    assert {gate["gate"] for gate in report(project, "int4-a")["gates"]} == {"min_top1_agreement"}
    assert report(project, "int4-a")["status"] == "failed" and report(project, "int8")["registered"] is None


def test_prefer_size_and_a_size_target(fake_project):
    project = searching(fake_project, '{ min_top1 = 0.6, max_size_mb = 200, prefer = "size" }')
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert registered(project) == ["int4-a"]
    assert "the smallest package" in result.stdout


def test_a_second_search_reuses_every_candidate_and_rejudges(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.9 }")
    assert project.cli("build").exit_code == 0
    before = len(runs(project))
    project.file.write_text(project.file.read_text().replace("min_top1 = 0.9", "min_top1 = 0.95"))
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert [line for line in runs(project)[before:] if "quantize" in line or "figures" in line] == []
    assert "int8" in registered(project)


def test_no_candidate_meeting_the_targets_fails_the_build(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.99 }")
    result = project.cli("build")
    assert result.exit_code == 2
    assert "search: no candidate met the targets (int4-a, int4-b, int8); nothing deployed" in result.stdout
    assert registered(project) == []


def test_candidates_restricts_the_search_to_the_named_ones(fake_project):
    project = searching(fake_project, '{ min_top1 = 0.9, candidates = ["int4-a", "int8"] }')
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    assert registered(project) == ["int8"]
    assert not (project.path / "build" / "int4-b").exists()


@pytest.mark.parametrize(
    ("search", "extra", "message"),
    [
        ("{ }", "", "[quantize] search has no target"),
        ('{ min_top1 = "high" }', "", "[quantize] search min_top1 must be a number above 0, not 'high'"),
        ('{ min_top1 = 0.9, prefer = "speed" }', "", "[quantize] search prefer must be one of 'decode', 'size'"),
        ("{ min_top1 = 0.9, fastest = true }", "", "[quantize] search has no key 'fastest'"),
        ('{ min_top1 = 0.9, candidates = ["int2"] }', "", "search candidates names 'int2'"),
        ("{ min_top1 = 0.9 }", 'precision = ["int4", "int8"]', "[quantize] precision is a list, but a search"),
        ("0.9", "", "[quantize] search must be a table"),
    ],
)
def test_a_bad_search_is_refused_while_planning(fake_project, search, extra, message):
    result = searching(fake_project, search, extra=extra).cli("plan")
    assert result.exit_code == 2
    assert message in flat(result.stderr)


def test_a_search_needs_the_figures_it_judges(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.9 }")
    project.file.write_text(project.file.read_text().replace('plugins = ["size", "figures"]', 'plugins = ["size"]'))
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "search needs the figures top1_agreement, decode_tokens_per_s" in flat(result.stderr)


def test_a_search_and_a_fallback_are_refused_together(fake_project):
    project = searching(fake_project, "{ min_top1 = 0.9 }")
    text = project.file.read_text().replace("[evaluate]\n", '[evaluate]\nfallback = ["int4-a", "int8"]\n')
    project.file.write_text(text)
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "[evaluate] fallback and [quantize] search both choose" in flat(result.stderr)


def test_choice_prefers_the_fastest_or_smallest_passing_and_the_cheaper_on_a_tie():
    measured = [
        Measured("a", {"decode_tokens_per_s": 100.0, "size_mb": 90.0}, True),
        Measured("b", {"decode_tokens_per_s": 150.0, "size_mb": 120.0}, False),
        Measured("c", {"decode_tokens_per_s": 120.0, "size_mb": 90.0}, True),
        Measured("d", {"decode_tokens_per_s": float("nan"), "size_mb": 10.0}, True),
    ]
    assert choose(QuantizeSearch(min_top1=0.5), measured).name == "c"
    assert choose(QuantizeSearch(min_top1=0.5, prefer="size"), measured).name == "d"
    assert choose(QuantizeSearch(min_top1=0.5, prefer="size"), measured[:3]).name == "a"
    assert choose(QuantizeSearch(min_top1=0.5), [measured[1]]) is None
