"""algorithm = "gptq" and "hqq" (onnxruntime's weight-only quantizers) on a tiny tied model: each build runs in
onnxruntime-genai and follows the source about as closely as round to nearest on the calibration text, the tied
embedding and lm_head still share one table, and a bad calibration file is a ConfigError naming the key."""

from __future__ import annotations

import pytest

from slmdeploy.plugin import ConfigError, SourceModel
from slmdeploy.testing.fidelity import genai_logits, torch_logits
from slmdeploy_evaluate.texts import ENGLISH
from slmdeploy_olive.convert import OliveConverter
from slmdeploy_olive.quantize import OliveQuantizer


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from slmdeploy.testing.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tie_word_embeddings=True)


@pytest.fixture
def export(source, run_stage):
    return run_stage(OliveConverter, SourceModel(source))


@pytest.fixture
def calibration(tmp_path):
    file = tmp_path / "calibration.txt"
    file.write_text("\n\n".join(ENGLISH), encoding="utf-8")
    return file


def figures(source, folder):
    """Fidelity over the calibration text (every built-in English passage, cut to the tiny model's context)."""
    from transformers import AutoTokenizer

    from slmdeploy.plugin.fidelity import add_sums, fidelity_figures, fidelity_sums

    tokenizer = AutoTokenizer.from_pretrained(source)
    sums = []
    for passage in ENGLISH:
        ids = tokenizer(passage)["input_ids"][:200]
        sums.append(fidelity_sums(torch_logits(source, ids), genai_logits(folder, ids), ids))
    return fidelity_figures(add_sums(sums))


def graph_nodes(folder):
    import onnx

    return list(onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node)


def test_gptq_and_hqq_follow_the_source_as_closely_as_rtn(source, export, run_stage, calibration):
    rtn = figures(source, run_stage(OliveQuantizer, export, {"algorithm": "rtn"}).path)
    for options in ({"algorithm": "gptq", "calibration": str(calibration)}, {"algorithm": "hqq"}):
        made = run_stage(OliveQuantizer, export, options)
        nodes = graph_nodes(made.path)
        assert not [node.name for node in nodes if node.op_type == "MatMul"], options  # every MatMul quantized
        lookup = next(node for node in nodes if "input_ids" in node.input and node.op_type.startswith("Gather"))
        head = next(node for node in nodes if node.op_type == "MatMulNBits" and "logits" in node.output)
        reshape = next(node for node in nodes if head.input[1] in node.output)  # the surgery's view of the table
        assert lookup.op_type == "GatherBlockQuantized" and lookup.input[0] in reshape.input, options  # tied
        found = figures(source, made.path)
        assert found["top1_agreement"] >= rtn["top1_agreement"] - 0.05, (options, found, rtn)
        assert found["mean_kl"] <= 1.5 * rtn["mean_kl"], (options, found, rtn)


def test_hqq_stores_float_zero_points_and_keeps_the_named_parts(source, export, run_stage):
    import onnx

    made = run_stage(OliveQuantizer, export, {"algorithm": "hqq", "keep_float": ["/model/layers.0/attn/o_proj/MatMul"]})
    model = onnx.load(str(made.path / "model.onnx"))
    types = {init.name: init.data_type for init in model.graph.initializer}
    nodes = graph_nodes(made.path)
    assert "/model/layers.0/attn/o_proj/MatMul" in [node.name for node in nodes if node.op_type == "MatMul"]
    layer = next(node for node in nodes if node.op_type == "MatMulNBits" and "layers.1" in node.name)
    assert types[layer.input[3]] == onnx.TensorProto.FLOAT  # HQQ's zero points are floats, not packed uint4
    accuracy = {attribute.name: attribute.i for attribute in layer.attribute}["accuracy_level"]
    assert accuracy == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), (b"\xff\xfe\x00\x01binary", "is not UTF-8 text"), (b"\n \n\n", "holds no text")],
)
def test_a_bad_calibration_file_is_a_config_error(export, run_stage, tmp_path, content, message):
    file = tmp_path / "calibration.txt"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as refused:
        run_stage(OliveQuantizer, export, {"algorithm": "gptq", "calibration": str(file)})
    assert refused.value.where == "[quantize] calibration" and str(file) in str(refused.value)


@pytest.mark.parametrize("scheme", ["sym", "asym"])
def test_gptq_spreads_each_rounding_error_and_packs_on_its_grid(scheme):
    """On inputs with correlated channels, GPTQ's weight leaves less output error than round to nearest's, and
    onnxruntime's packing (with the scales GPTQ rounded to) keeps it exactly."""
    import numpy as np
    from onnxruntime.quantization.neural_compressor import weight_only

    from slmdeploy_olive.weight_only import _on_grid, gptq_columns

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((128, 64)).astype(np.float32)
    inputs = rng.standard_normal((2000, 128)) @ rng.standard_normal((128, 128))
    hessian = 2 * inputs.T @ inputs / len(inputs)

    def dequantized(packed):
        q, scale, zero = packed
        return ((q - zero.astype(np.float64)) * scale).reshape(64, 128).T

    def error(quantized):
        return np.linalg.norm(inputs @ (quantized - weight)) / np.linalg.norm(inputs @ weight)

    rtn = dequantized(weight_only.quant_tensor(weight.T.copy(), 4, 32, scheme, "uint"))
    gptq = gptq_columns(weight.copy(), hessian.copy(), 4, 32, scheme)
    packed = dequantized(_on_grid(weight_only.quant_tensor)(gptq.T.copy(), 4, 32, scheme, "uint"))
    assert np.allclose(packed, gptq, atol=1e-6)
    assert error(gptq) < 0.8 * error(rtn), (error(gptq), error(rtn))
