"""The pytest plugin for plugin authors runs one stage class with options from a dict."""

from __future__ import annotations

import pytest

from slmdeploy.errors import ConfigError
from slmdeploy.plugin import OnnxModel, QuantizedModel, SourceModel

from fakeplugins import CopyConverter, FakeQuantizer, make_model


def test_run_stage_chains_stages(run_stage, tmp_path):
    source = SourceModel(make_model(tmp_path / "model"))
    (tmp_path / "runs.log").touch()
    converted = run_stage(CopyConverter, source)
    assert isinstance(converted, OnnxModel) and (converted.path / "model.onnx").is_file()
    quantized = run_stage(FakeQuantizer, converted, {"precision": "int8", "block_size": 16})
    assert isinstance(quantized, QuantizedModel) and quantized.precision == "int8"


def test_run_stage_validates_options(run_stage, tmp_path):
    with pytest.raises(ConfigError, match="block_size must be an integer"):
        run_stage(FakeQuantizer, OnnxModel(tmp_path), {"block_size": "big"})
