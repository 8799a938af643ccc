"""[quantize] algorithm = "q4_1": llama.cpp's Q4_1 blocks (an fp16 scale and minimum per block of 32) made from the
float weights and carried as a Q4_1 GGUF's are; with keep_int8 the 8-bit head and embedding share one table."""

from __future__ import annotations

import json

import pytest

from slmdeploy.plugin import ConfigError, SourceModel
from slmdeploy.testing.fidelity import compare, genai_logits, torch_logits
from slmdeploy.testing.models import SAMPLE_TEXT
from slmdeploy_olive.convert import OliveConverter
from slmdeploy_olive.q4_1 import q4_1_blocks
from slmdeploy_olive.quantize import OliveQuantizer, QuantizeOptions

from package_weights import decoded_weights

HEAD = ["lm_head", "embeddings"]


def test_blocks_hold_a_q4_1_grid_exactly_and_any_weight_within_half_a_step():
    import numpy as np

    rng = np.random.default_rng(0)
    scales = rng.uniform(0.001, 0.05, (6, 4)).astype(np.float16).astype(np.float32)
    minimums = rng.uniform(-0.4, 0.0, (6, 4)).astype(np.float16).astype(np.float32)
    levels = rng.integers(0, 16, (6, 4, 32))
    levels[..., 0], levels[..., 1] = 0, 15  # every block spans its whole grid, as llama.cpp's Q4_1 makes it
    grid = (levels * scales[..., None] + minimums[..., None]).reshape(6, -1).astype(np.float32)
    assert np.abs(q4_1_blocks(grid).decode() - grid).max() <= 1e-6 * np.abs(grid).max()

    weight = rng.standard_normal((8, 128)).astype(np.float32) * 0.02 + 0.01
    weight[0, :32] = 0.25  # a constant block: its minimum, step 0
    blocks = q4_1_blocks(weight)
    decoded = blocks.decode().reshape(8, 4, 32)
    step = blocks.scales[..., None]
    assert np.all(np.abs(decoded - weight.reshape(8, 4, 32)) <= step / 2 + 1e-6 * np.abs(weight).max())
    assert np.array_equal(decoded[0, 0], np.full(32, np.float16(0.25), np.float32))
    assert blocks.scales.dtype == np.float32 and np.array_equal(blocks.scales.astype(np.float16), blocks.scales)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from slmdeploy.testing.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tie_word_embeddings=True)


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    """The tiny tied model's float32 export, and its int4 with rtn and with q4_1 (head and embedding at 8 bits)."""
    from slmdeploy.testing import run_stage_in

    work = tmp_path_factory.mktemp("q4_1")
    export = run_stage_in(work, OliveConverter, SourceModel(source))
    made = {
        name: run_stage_in(work, OliveQuantizer, export, {"algorithm": algorithm, "keep_int8": HEAD})
        for name, algorithm in (("rtn", "rtn"), ("q4_1", "q4_1"))
    }
    return export, made


def test_every_4_bit_matmul_gets_q4_1_blocks_and_the_head_shares_the_8_bit_table(built):
    import onnx

    _, made = built
    folder = made["q4_1"].path
    report = json.loads((folder / "quantization.json").read_text())
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    quantized = [node for node in graph.node if node.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    per_layer = 5  # qkv, o, gate, up, down (gate and up then share one MatMulNBits and one offset term)
    assert len(report["q4_1"]) == per_layer * 2 and report["head_tied"] is True
    assert set(report["kept"]) == {"/lm_head/MatMul_Q8", "/model/embed_tokens/Gather_Q8"}
    minimums = [tensor for tensor in graph.initializer if tensor.name.endswith("/minimums")]
    assert len(minimums) == 4 * 2 and all(tensor.data_type == onnx.TensorProto.FLOAT16 for tensor in minimums)
    producers = {output: node for node in graph.node for output in node.output}
    head = producers["logits"]
    lookup = next(node for node in quantized if node.op_type == "GatherBlockQuantized")
    assert producers[head.input[1]].op_type == "Reshape" and producers[head.input[1]].input[0] == lookup.input[0]
    assert head.input[2] == lookup.input[2]
    tables = [tensor for tensor in graph.initializer if tensor.name.endswith("_Q8")]
    assert len(tables) == 1  # one 8-bit table for the lookup and the head


def test_an_untied_8_bit_head_is_tied_to_the_embedding_when_the_source_ties_them(built):
    """Olive's 8-bit passes round a few values of the head and the embedding differently on a real model (its
    tying surgery then leaves two tables); planted here as the rtn build's head with a table of its own."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from slmdeploy_olive import gguf_graph
    from slmdeploy_olive.gguf_carry import ReferenceWeights

    export, made = built
    model = onnx.load(str(made["rtn"].path / "model.onnx"))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    head, view = producers["logits"], producers[producers["logits"].input[1]]
    arrays = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    own = arrays[view.input[0]].reshape(arrays[view.input[1]]).copy()
    own.flat[::97] = np.minimum(own.flat[::97], 254) + 1  # one level up, as the two quantizers disagree
    graph.initializer.append(numpy_helper.from_array(own, "planted_head_table"))
    head.input[1] = "planted_head_table"
    assert gguf_graph.untied_head(graph)
    assert gguf_graph.tie_head(graph, ReferenceWeights(export.path / "model.onnx"))
    producers = {output: node for node in graph.node for output in node.output}
    lookup = next(node for node in graph.node if node.op_type == "GatherBlockQuantized")
    assert producers[head.input[1]].input[0] == lookup.input[0] and head.input[2] == lookup.input[2]
    assert not gguf_graph.untied_head(graph)
    assert "planted_head_table" not in {tensor.name for tensor in graph.initializer}


def test_q4_1_weights_are_closer_to_the_source_than_round_to_nearest(built, source):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    _, made = built
    state = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).state_dict()
    expected = {
        f"/model/layers.{index}/{part}": state[f"model.layers.{index}.{module}.weight"].numpy()
        for index in range(2)
        for part, module in (("attn/o_proj", "self_attn.o_proj"), ("mlp/down_proj", "mlp.down_proj"))
    }
    found = {name: decoded_weights(made[name].path / "model.onnx") for name in made}
    errors = {name: sum(float(np.square(found[name][key] - weight).sum()) for key, weight in expected.items())
              for name in made}  # fmt: skip
    assert errors["q4_1"] < 0.9 * errors["rtn"], errors  # measured 0.0598 against 0.0725 (0.82x)
    for key, weight in expected.items():  # within half a step of its block, each weight
        blocks = weight.reshape(weight.shape[0], -1, 32)
        step = (blocks.max(-1) - blocks.min(-1)) / 15
        error = np.abs(found["q4_1"][key] - weight).reshape(blocks.shape)
        assert np.all(error <= step[..., None] * 0.51 + 1e-6), key


def test_q4_1_follows_the_source(built, source):
    from transformers import AutoTokenizer

    _, made = built
    ids = AutoTokenizer.from_pretrained(source)(SAMPLE_TEXT)["input_ids"]
    reference = torch_logits(source, ids)
    figures = {name: compare(reference, genai_logits(made[name].path, ids), ids) for name in made}
    assert figures["q4_1"]["top1_agreement"] >= 0.9, figures  # measured 1.0
    assert figures["q4_1"]["mean_kl"] <= figures["rtn"]["mean_kl"], figures  # measured 7.2e-5 against 1.04e-4


def test_q4_1_is_the_default_and_takes_other_block_sizes(built, source, run_stage):
    from transformers import AutoTokenizer

    export, made = built
    ids = AutoTokenizer.from_pretrained(source)(SAMPLE_TEXT)["input_ids"]
    reference = torch_logits(source, ids)
    by_default = run_stage(OliveQuantizer, export, {})
    report = json.loads((by_default.path / "quantization.json").read_text())
    assert (
        report["algorithm"] == "q4_1"
        and report["q4_1"] == json.loads((made["q4_1"].path / "quantization.json").read_text())["q4_1"]
    )
    wider = run_stage(OliveQuantizer, export, {"block_size": 64})
    assert b"_by_64" in (wider.path / "model.onnx").read_bytes()  # the block sums' view, [.., K/64, 64]
    figures = compare(reference, genai_logits(wider.path, ids), ids)
    assert figures["top1_agreement"] >= 0.9, figures


def test_q4_1_refuses_zero_points_for_int4_only():
    with pytest.raises(ConfigError, match="symmetric = false stores a zero point") as refused:
        OliveQuantizer.check(QuantizeOptions(symmetric=False))
    assert 'algorithm = "rtn"' in str(refused.value.fix)
    OliveQuantizer.check(QuantizeOptions(precision="int8", symmetric=False))  # int8 is round to nearest
    OliveQuantizer.check(QuantizeOptions(algorithm="rtn", symmetric=False))
