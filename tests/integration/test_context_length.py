"""``[convert] context_length``: the rotary tables keep the positions asked for, genai_config.json says the shorter
context, and every logit the package computes within it is the full export's, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import onnx

from slmdeploy.host.manager import get_plugin_manager
from slmdeploy.host.registry import Registry
from slmdeploy.model.fidelity import genai_logits
from slmdeploy.model.runtime import load_genai_model
from slmdeploy.plugin import SourceModel

POSITIONS = 64  # of the tiny model's 256


def rotary_rows(folder):
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return {item.name: item.dims[0] for item in graph.initializer if item.name in ("cos_cache", "sin_cache")}


def test_a_shorter_context_keeps_the_logits_and_drops_the_rest_of_the_tables(tiny_model, tiny_onnx_model, run_stage):
    full = tiny_onnx_model("llama", convert=True).path
    converter = Registry(get_plugin_manager()).get("convert", "olive").cls
    short = run_stage(converter, SourceModel(tiny_model("llama")), options={"context_length": POSITIONS}).path
    assert rotary_rows(full) == {"cos_cache": 256, "sin_cache": 256}
    assert rotary_rows(short) == {"cos_cache": POSITIONS, "sin_cache": POSITIONS}
    config = json.loads((short / "genai_config.json").read_text())
    assert config["model"]["context_length"] == POSITIONS and config["search"]["max_length"] <= POSITIONS
    head_size = json.loads((full / "genai_config.json").read_text())["model"]["decoder"]["head_size"]
    saved = 2 * (256 - POSITIONS) * head_size // 2 * 4  # two float32 tables of head_size / 2 columns
    assert (full / "model.onnx.data").stat().st_size - (short / "model.onnx.data").stat().st_size >= saved
    ids = list(np.random.default_rng(3).integers(4, 300, POSITIONS - 1))
    assert np.array_equal(genai_logits(load_genai_model(short, 1), ids), genai_logits(load_genai_model(full, 1), ids))
