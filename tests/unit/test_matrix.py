"""Matrices of fine-tunes: a list of LoRA adapters is a variant axis; and choosing the executor that builds them."""

from __future__ import annotations

import json
import sys

from support import FULL_PROJECT, runs

ADAPTERS = FULL_PROJECT.replace('path = "model"', 'path = "model"\nadapter = ["adapters/support", "adapters/sales"]')


def flat(text):
    return " ".join(text.split())


def make_adapters(project, *names):
    for name in names:
        folder = project.path / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "name": name}))


def test_each_adapter_builds_its_own_variants_named_after_its_folder(fake_project):
    project = fake_project(ADAPTERS)
    make_adapters(project, "support", "sales")
    plan = project.cli("plan")
    assert plan.exit_code == 0, plan.output
    assert "matrix: adapter (support, sales) x precision (int4, int8) = 4 variants" in plan.stdout
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    lines = runs(project)
    assert sorted(line for line in lines if line.endswith("convert")) == ["sales-int4 convert", "support-int4 convert"]
    assert len([line for line in lines if " quantize " in line]) == 4
    for name in ("support", "sales"):
        for precision in ("int4", "int8"):
            folder = project.path / "build" / f"{name}-{precision}"
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["source"]["adapter"] == str(project.path / "adapters" / name)
            assert json.loads((folder / "model" / "adapter" / "adapter_config.json").read_text())["name"] == name
            assert all("node" in stage and "queued_s" in stage for stage in manifest["stages"])


def test_plan_json_has_the_matrix(fake_project):
    project = fake_project(ADAPTERS)
    make_adapters(project, "support", "sales")
    plan = json.loads(project.cli("plan", "--json").stdout)
    assert plan["matrix"] == {"adapter": ["support", "sales"], "precision": ["int4", "int8"]}
    names = [variant["variant"] for variant in plan["variants"]]
    assert names == ["support-int4", "support-int8", "sales-int4", "sales-int8"]


def test_one_adapter_keeps_the_variant_names(fake_project):
    project = fake_project(FULL_PROJECT.replace('path = "model"', 'path = "model"\nadapter = "adapters/support"'))
    make_adapters(project, "support")
    plan = json.loads(project.cli("plan", "--json").stdout)
    assert [variant["variant"] for variant in plan["variants"]] == ["int4", "int8"]


def test_two_adapter_folders_with_one_name_are_refused(fake_project):
    project = fake_project(ADAPTERS.replace('"adapters/sales"', '"other/support"'))
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "slmdeploy.toml:7: [source] two adapter folders have one name (support, support)" in flat(result.stderr)


def test_a_missing_adapter_folder_is_named(fake_project):
    project = fake_project(ADAPTERS)
    make_adapters(project, "support")
    result = project.cli("plan")
    assert result.exit_code == 2
    assert "adapters/sales does not exist" in flat(result.stderr)


def test_the_ray_executor_without_ray_says_how_to_install_it(fake_project, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    project = fake_project()
    result = project.cli("build", "--executor", "ray")
    assert result.exit_code == 2
    assert "the ray executor needs Ray, which is not installed" in flat(result.stderr)
    assert 'pip install "slmdeploy[ray]"' in flat(result.stderr)
    assert "Traceback" not in result.output
    assert not (project.path / "build").exists()


def test_an_unknown_executor_in_the_build_table_is_refused(fake_project):
    project = fake_project(FULL_PROJECT + '\n[build]\nexecutor = "slurm"\n')
    result = project.cli("build")
    assert result.exit_code == 2
    assert '[build] executor must be one of "local", "ray", not \'slurm\'' in flat(result.stderr)


def test_the_cache_can_live_outside_the_project(fake_project, tmp_path):
    shared = tmp_path / "shared"
    project = fake_project(FULL_PROJECT + f'\n[build]\ncache_dir = "{shared}"\n')
    assert project.cli("build").exit_code == 0
    assert len(list((shared / "cache").iterdir())) == 9
    assert not (project.path / ".slmdeploy" / "cache").exists()
    assert project.cli("clean").exit_code == 0
    assert not (shared / "cache").exists()
