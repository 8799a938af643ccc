"""Tiny random models of each architecture: converted at fp32, int8 and int4 and compared with PyTorch."""

from __future__ import annotations

import json

import pytest

from slmdeploy.plugin import OnnxModel, QuantizedModel, SourceModel
from slmdeploy.testing.fidelity import compare, genai_logits, torch_logits
from slmdeploy.testing.models import ARCHITECTURES, SAMPLE_TEXT
from slmdeploy_olive.convert import OliveConverter
from slmdeploy_olive.quantize import OliveQuantizer

# Top-1 agreement with the float32 PyTorch model over SAMPLE_TEXT, measured on these random 2-layer models
# (README, "Fidelity bounds"); random weights make near-ties common, so real models agree more.
# Measured (2026-11, olive-ai 0.13, onnxruntime-genai 0.18): int8 >= 0.944 and int4 >= 0.667 (both Phi-3).
MIN_TOP1 = {"int8": 0.9, "int4": 0.6}
MAX_LOGIT_DIFF = {"fp32": 1e-4, "int8": 0.05, "int4": 0.3}  # measured at most 0.011 and 0.145


def token_ids(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(SAMPLE_TEXT)["input_ids"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_converts_and_quantizes_faithfully(architecture, tiny_model, run_stage, record_property):
    folder = tiny_model(architecture)
    ids = token_ids(folder)
    reference = torch_logits(folder, ids)
    converted = run_stage(OliveConverter, SourceModel(folder))
    assert isinstance(converted, OnnxModel) and converted.precision == "fp32"
    fp32 = compare(reference, genai_logits(converted.path, ids), ids)
    assert fp32["max_abs_logit_diff"] < MAX_LOGIT_DIFF["fp32"]
    assert fp32["top1_agreement"] == 1.0
    for precision in ("int8", "int4"):
        quantized = run_stage(OliveQuantizer, converted, {"precision": precision})
        assert isinstance(quantized, QuantizedModel) and quantized.precision == precision
        figures = compare(reference, genai_logits(quantized.path, ids), ids)
        record_property(f"{architecture}-{precision}", json.dumps(figures))
        assert figures["top1_agreement"] >= MIN_TOP1[precision], figures
        assert figures["max_abs_logit_diff"] < MAX_LOGIT_DIFF[precision], figures
        assert (quantized.path / "genai_config.json").is_file()
        assert (quantized.path / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "options",
    [
        {"precision": "int4", "algorithm": "k_quant"},
        {"precision": "int4", "symmetric": False, "block_size": 16},
        {"precision": "int4", "accuracy_level": 1, "keep_float": ["/lm_head/MatMul"]},
        {"precision": "int8", "quantize_embeddings": True},
        {"precision": "fp32"},
    ],
)
def test_quantization_options(options, tiny_model, run_stage):
    import onnx

    folder = tiny_model("llama")
    ids = token_ids(folder)
    reference = torch_logits(folder, ids)
    converted = run_stage(OliveConverter, SourceModel(folder))
    quantized = run_stage(OliveQuantizer, converted, options)
    figures = compare(reference, genai_logits(quantized.path, ids), ids)
    limit = MAX_LOGIT_DIFF[options["precision"]]
    assert figures["max_abs_logit_diff"] < limit, figures
    graph = onnx.load(str(quantized.path / "model.onnx"), load_external_data=False).graph
    operators = {node.op_type for node in graph.node}
    if options["precision"] == "fp32":
        assert "MatMulNBits" not in operators
        return
    matmuls = [node for node in graph.node if node.op_type == "MatMulNBits"]
    bits = {attribute.i for node in matmuls for attribute in node.attribute if attribute.name == "bits"}
    assert bits == {int(options["precision"][3:])}
    for name in options.get("keep_float", []):
        assert any(node.name == name and node.op_type == "MatMul" for node in graph.node)
    if options.get("quantize_embeddings"):
        assert "GatherBlockQuantized" in operators
    if options.get("block_size"):
        sizes = {attribute.i for node in matmuls for attribute in node.attribute if attribute.name == "block_size"}
        assert sizes == {options["block_size"]}
