"""The pytest plugin's model fixtures, as a plugin author uses them: a tiny model of any architecture and the
model folder a template family runs on, with no hand-made files."""

from __future__ import annotations

import json
from pathlib import Path

from slmdeploy.plugin import DeployPackage, OnnxModel
from slmdeploy_templates.gemma import GemmaFamily

GEMMA2 = json.loads((Path(__file__).parents[1] / "fixtures/chat_templates/gemma2.json").read_text(encoding="utf-8"))
GEMMA_TOKENS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "extra": ["<start_of_turn>", "<end_of_turn>"]}


def test_tiny_model_of_any_architecture_or_config(tiny_model):
    gemma2 = json.loads((tiny_model("gemma2") / "config.json").read_text())
    assert gemma2["architectures"] == ["Gemma2ForCausalLM"] and gemma2["sliding_window"] == 64
    granite = json.loads(
        (tiny_model(config={"model_type": "granite", "num_hidden_layers": 1}) / "config.json").read_text()
    )
    assert granite["architectures"] == ["GraniteForCausalLM"] and granite["num_hidden_layers"] == 1
    assert json.loads((tiny_model("gemma3") / "config.json").read_text())["architectures"] == ["Gemma3ForCausalLM"]


def test_a_template_family_runs_on_tiny_onnx_model(tiny_onnx_model, run_stage):
    model = tiny_onnx_model("gemma2", chat_template=GEMMA2["chat_template"], special=GEMMA_TOKENS)
    assert isinstance(model, OnnxModel) and (model.path / "genai_config.json").is_file()
    assert not (model.path / "model.onnx").exists()  # the genai_config a conversion writes, without weights
    package = run_stage(GemmaFamily, model)
    assert isinstance(package, DeployPackage) and package.family == "gemma"
    tokenizer = json.loads((package.path / "tokenizer.json").read_text())
    end_of_turn = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<end_of_turn>")
    eos = json.loads((package.path / "genai_config.json").read_text())["model"]["eos_token_id"]
    assert end_of_turn in (eos if isinstance(eos, list) else [eos])


def test_tiny_onnx_model_converts_for_real(tiny_onnx_model):
    model = tiny_onnx_model("qwen2", convert=True)
    assert (model.path / "model.onnx").is_file() and model.precision == "fp32"
