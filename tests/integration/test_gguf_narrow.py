"""Carried blocks stored as fp16 (`gguf_narrow`): onnxruntime computes with exactly the float32 values the blocks
hold, and a value fp16 cannot hold stays float32."""

from __future__ import annotations

import pytest

K, N = 64, 8
NODE = "/model/layers.0/mlp/down_proj/MatMul_Q4"


def q4_1_blocks(minimums_fp16: bool):
    """Random Q4_1-like blocks [N, K/32]: fp16 scales, minimums fp16 (as a GGUF holds them) or not."""
    import numpy as np

    from slmdeploy_olive.gguf_blocks import Blocks

    rng = np.random.default_rng(7)
    packed = rng.integers(0, 256, size=(N, K // 32, 16), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(N, K // 32)).astype(np.float16).astype(np.float32)
    minimums = rng.uniform(-0.4, 0.0, size=(N, K // 32)).astype(np.float32)
    if minimums_fp16:
        minimums = minimums.astype(np.float16).astype(np.float32)
    else:
        minimums += np.float32(1e-6)  # off the fp16 grid
    return Blocks(4, packed, scales, minimums + np.float32(8) * scales)


def carried_model(blocks):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from slmdeploy_olive import gguf_graph

    node = helper.make_node(
        "MatMulNBits", ["x", "B", "S"], ["y"], name=NODE, domain="com.microsoft",
        K=K, N=N, bits=4, block_size=32, accuracy_level=0,
    )  # fmt: skip
    initializers = [
        numpy_helper.from_array(np.zeros((N, K // 32, 16), np.uint8), "B"),
        numpy_helper.from_array(np.ones(N * K // 32, np.float32), "S"),
    ]
    graph = helper.make_graph(
        [node],
        "carried",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, N])],
        initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    gguf_graph.apply(model, {NODE: blocks})
    return model


@pytest.mark.parametrize("minimums_fp16", [True, False])
def test_onnxruntime_computes_with_the_blocks_exact_weights(minimums_fp16):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto

    blocks = q4_1_blocks(minimums_fp16)
    model = carried_model(blocks)
    stored = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    assert stored["S_fp16"] == TensorProto.FLOAT16  # GGUF scales are fp16 numbers: always narrowed
    narrowed = [name for name, kind in stored.items() if name.endswith("/minimums") and kind == TensorProto.FLOAT16]
    assert len(narrowed) == (1 if minimums_fp16 else 0)
    x = np.random.default_rng(3).standard_normal((1, 1, K)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"x": x})
    expected = x.astype(np.float64) @ blocks.decode().astype(np.float64).T
    assert np.abs(found - expected).max() <= 1e-5 * np.abs(expected).max()


def test_every_offset_term_shares_one_constant_eight():
    """One initializer named `EIGHT` however many layers: a name given twice is a warning at every load (measured: 240
    onnxruntime warnings when the demo's 120 offset terms each added their own)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from slmdeploy_olive.gguf_narrow import EIGHT, offsets_subgraph

    graph = helper.make_graph([], "layers", [], [])
    for layer in range(3):
        scales = np.full((4, 2), 0.5, np.float32)  # [N, K/32]
        offsets = np.full((2, 4), 0.25, np.float32) + 8 * scales.T  # m + 8d, m exact in fp16
        graph.initializer.append(numpy_helper.from_array(scales, f"layer{layer}/scales"))
        assert offsets_subgraph(graph, f"layer{layer}", offsets, (f"layer{layer}/scales", scales))  # the fp16 path
    assert [tensor.name for tensor in graph.initializer].count(EIGHT) == 1
