"""The project file checked once, where it is loaded: `project_options` turns it into typed options with no plugin
loaded, each mistake at its line; planning only adds what needs the installed plugins."""

from __future__ import annotations

import pytest

from slmdeploy.config.project import load_project
from slmdeploy.config.project_options import project_options
from slmdeploy.errors import SlmdeployError

from support import FULL_PROJECT

GATED = FULL_PROJECT.replace(
    'plugins = ["size"]',
    'plugins = ["size"]\nfallback = ["int4", "int8"]\n\n[evaluate.gates]\nmax_package_bytes = 5000',
)


def _options(project):
    return project_options(load_project(project.file))


def _error(project) -> str:
    with pytest.raises(SlmdeployError) as caught:
        _options(project)
    return " ".join(str(caught.value).split())


def test_the_options_are_typed_and_checked_without_plugins(slmdeploy_project):
    from fakeplugins import make_model

    project = slmdeploy_project(GATED)  # no slmdeploy_plugins.py: nothing here needs a plugin
    make_model(project.path / "model")
    options = _options(project)
    (source,) = [named.model for named in options.sources]
    assert source.path == project.path / "model" and source.format == "hf" and source.adapter is None
    selected = [(table.stage, table.key, table.name) for table in options.stages]
    assert selected == [
        ("convert", "convert", "copy"),
        ("quantize", "quantize", "fake"),
        ("template", "template", "auto"),
        ("evaluate", "evaluate.size", "size"),
        ("register", "register", "dir"),
    ]
    assert next(table.options for table in options.stages if table.stage == "quantize") == {
        "precision": ["int4", "int8"]
    }
    assert [(gate.bound, gate.metric, gate.threshold) for gate in options.gates] == [("max", "package_bytes", 5000.0)]
    assert options.fallback == ("int4", "int8") and options.evaluators == ("size",) and options.search is None
    assert options.table("evaluate.size").name == "size" and options.table("register").options == {"folder": "registry"}
    assert options.table("evaluate.quality") is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('path = "model"', 'path = "nowhere"'), "slmdeploy.toml:6: the source model {root}/nowhere does not exist"),
        (
            ('path = "model"', 'path = "model"\nadapter = "adapters/gone"'),
            "slmdeploy.toml:7: the LoRA adapter folder {root}/adapters/gone does not exist",
        ),
        (('plugins = ["size"]', 'plugins = "size"'), "[evaluate] plugins must be a list of strings, not 'size'"),
        (('plugins = ["size"]', 'plugins = ["size"]\nsize = 3'), "[evaluate.size] must be a table"),
        (('plugins = ["size"]', 'plugins = ["size"]\nsise = {}'), "unknown key 'sise' in [evaluate]"),
        (('fallback = ["int4", "int8"]', 'fallback = ["int4", "int4"]'), "[evaluate] fallback names a variant twice"),
        (("max_package_bytes = 5000", 'max_package_bytes = "big"'), "max_package_bytes must be a number, not 'big'"),
        (
            ('precision = ["int4", "int8"]', "search = { min_top1 = 0.5 }"),
            "[evaluate] fallback and [quantize] search both choose the variant to deploy",
        ),
        (
            ('plugin = "copy"', 'plugin = "copy"\nadapters = "both"'),
            'slmdeploy.toml:10: [convert] adapters must be "merge" or "runtime", not \'both\'',
        ),
        (
            ('plugin = "copy"', 'plugin = "copy"\nadapters = "runtime"'),
            'slmdeploy.toml:10: [convert] adapters = "runtime" applies LoRA adapters at run time, but [source] names '
            "no adapter",
        ),
    ],
)
def test_each_mistake_is_found_where_the_file_is_loaded(slmdeploy_project, change, expected):
    from fakeplugins import make_model

    project = slmdeploy_project(GATED.replace(*change))
    make_model(project.path / "model")
    assert expected.format(root=project.path) in _error(project)


def test_what_needs_the_plugins_is_found_when_the_plan_is_made(fake_project):
    """A gate on a figure no selected evaluator measures passes the loader, and planning names the figures."""
    project = fake_project(GATED.replace("max_package_bytes", "max_package_byte"))
    assert _options(project).gates[0].metric == "package_byte"
    result = project.cli("plan")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "[evaluate.gates] max_package_byte names no figure the selected evaluators measure" in message
    assert "Did you mean 'max_package_bytes'?" in message


def test_runtime_adapters_are_one_source_carrying_every_adapter(slmdeploy_project):
    from fakeplugins import make_model

    text = GATED.replace('path = "model"', 'path = "model"\nadapter = ["adapters/support", "adapters/sales"]')
    project = slmdeploy_project(text.replace('plugin = "copy"', 'plugin = "copy"\nadapters = "runtime"'))
    make_model(project.path / "model")
    for name in ("support", "sales"):
        (project.path / "adapters" / name).mkdir(parents=True)
    options = _options(project)
    (source,) = options.sources
    assert options.adapters == "runtime" and source.prefix == "" and source.model.adapter is None
    assert source.model.adapters == (project.path / "adapters/support", project.path / "adapters/sales")
    assert "adapters" not in options.table("convert").options  # the core's key, not the plugin's
    merged = _options(slmdeploy_project(text))
    assert merged.adapters == "merge" and [named.prefix for named in merged.sources] == ["support", "sales"]
