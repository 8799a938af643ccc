"""Every architecture the Olive plugin converts: a tiny random model of each (2 layers, hidden 64) converted at
fp32 and quantized to int4, compared with PyTorch teacher-forced, and asked to generate. The architectures the
builder lists but slmdeploy refuses are refused when the build is planned."""

from __future__ import annotations

import json

import pytest
from test_prefill_chunks import prefill_then_greedy

from slmdeploy.plugin import OnnxModel, QuantizedModel, SourceModel
from slmdeploy.testing.fidelity import compare, genai_logits, torch_logits
from slmdeploy.testing.models import SAMPLE_TEXT, make_config, make_tokenizer
from slmdeploy_olive import architectures
from slmdeploy_olive.configs import adapt_for_builder
from slmdeploy_olive.convert import OliveConverter
from slmdeploy_olive.quantize import OliveQuantizer

# Against the float32 PyTorch model, teacher-forced over LONG_TEXT, measured on these random 2-layer models
# (README, "Which architectures convert"). Random weights make near-ties common, so top-1 agreement is low where
# KL divergence is tiny (int4: Gemma 2 0.47 with KL 0.0011); real models agree more.
MIN_TOP1 = {"int8": 0.9, "int4": 0.4}
MAX_KL = {"int4": 0.01}  # measured at most 0.0013 (Gemma 3)
MAX_LOGIT_DIFF = {"fp32": 1e-4, "int8": 0.05, "int4": 0.5}  # int4: measured at most 0.35 (gpt-oss)
# fp32 exports that differ from PyTorch by more than rounding, with top-1 agreement 1.0 and KL below 3e-4 (measured
# 2026-11, onnxruntime-genai 0.18): the builder's graph computes these a little differently (left as found).
FP32_LOGIT_DIFF = {"PhiForCausalLM": 0.02, "NemotronForCausalLM": 0.1, "OlmoForCausalLM": 0.3}  # 0.0054, 0.028, 0.158
# Long enough (about 110 tokens) to pass the sliding window of the tiny Gemma 2 and 3 (64 tokens).
LONG_TEXT = " ".join([SAMPLE_TEXT] * 6)


def token_ids(folder, text=SAMPLE_TEXT):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(text)["input_ids"]


def generate(folder, new_tokens=8):
    """Greedy tokens after a short prompt, with a context shorter than any sliding window."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    ids = og.Tokenizer(model).encode("the capital of france is")
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    produced = []
    while not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    return produced


@pytest.mark.parametrize("architecture", sorted(architectures.CONVERTS))
def test_converts_quantizes_and_answers(architecture, tiny_model, run_stage, record_property):
    folder = tiny_model(architectures.CONVERTS[architecture])
    assert json.loads((folder / "config.json").read_text())["architectures"] == [architecture]
    ids = token_ids(folder, LONG_TEXT)
    reference = torch_logits(folder, ids)
    converted = run_stage(OliveConverter, SourceModel(folder))
    assert isinstance(converted, OnnxModel) and converted.precision == "fp32"
    fp32 = compare(reference, genai_logits(converted.path, ids), ids)
    assert fp32["max_abs_logit_diff"] < FP32_LOGIT_DIFF.get(architecture, MAX_LOGIT_DIFF["fp32"]), fp32
    assert fp32["top1_agreement"] == 1.0 and fp32["mean_kl"] < 1e-3, fp32
    quantized = run_stage(OliveQuantizer, converted, {"precision": "int4"})
    assert isinstance(quantized, QuantizedModel) and quantized.precision == "int4"
    figures = compare(reference, genai_logits(quantized.path, ids), ids)
    record_property(f"{architecture}-int4", json.dumps(figures))
    assert figures["top1_agreement"] >= MIN_TOP1["int4"], figures
    assert figures["mean_kl"] < MAX_KL["int4"], figures
    assert figures["max_abs_logit_diff"] < MAX_LOGIT_DIFF["int4"], figures
    assert len(generate(quantized.path)) == 8
    assert (quantized.path / "tokenizer.json").is_file()
    # A long prompt read in chunks (past the tiny Gemmas' 64-token window) computes what one step does.
    (whole, _), (chunked, _) = prefill_then_greedy(quantized.path, 0, ids), prefill_then_greedy(quantized.path, 24, ids)
    assert abs(chunked - whole).max() < 1e-3 * max(1.0, float(abs(whole).max())), architecture


def test_every_architecture_the_builder_lists_converts_or_is_refused():
    listed = set(architectures.supported())
    assert listed <= set(architectures.CONVERTS) | set(architectures.REFUSED), "classify the builder's new ones"
    assert not set(architectures.CONVERTS) & set(architectures.REFUSED)


def test_a_sliding_window_model_answers_with_a_context_shorter_than_its_window(tiny_model, run_stage):
    folder = tiny_model("gemma2", sliding_window=128)
    converted = run_stage(OliveConverter, SourceModel(folder))
    genai = json.loads((converted.path / "genai_config.json").read_text())
    assert "sliding_window" not in genai["model"]["decoder"]  # full-length caches: any max_length runs
    assert len(generate(converted.path, new_tokens=4)) == 4


def test_gemma3_rope_settings_are_adapted_for_the_builder():
    config = make_config("gemma3", make_tokenizer())
    config.architectures = ["Gemma3ForCausalLM"]
    config.rope_parameters["full_attention"] |= {"rope_type": "linear", "factor": 8.0}
    changes = adapt_for_builder(config)
    assert changes and "Gemma3ForCausalLM" in changes[0]
    assert config.rope_parameters == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}
    assert config.rope_local_base_freq == 10_000.0
    assert adapt_for_builder(config) == []  # already in the builder's form


@pytest.mark.parametrize(
    ("architecture", "reason"),
    [
        ("Gemma3ForConditionalGeneration", "a vision or audio model"),
        ("InternLM2ForCausalLM", "trust_remote_code"),
        ("BertForMaskedLM", "cannot export"),
    ],
)
def test_plan_refuses_an_architecture_it_does_not_convert(architecture, reason, slmdeploy_project):
    project = slmdeploy_project(
        '[project]\nname = "m"\n[source]\npath = "model"\n[convert]\nplugin = "olive"\n[quantize]\nplugin = "olive"\n',
        files={"model/config.json": json.dumps({"architectures": [architecture], "model_type": "x"})},
    )
    result = project.cli("plan")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # the CLI wraps the paragraph
    assert f"slmdeploy.toml:4: the model in {project.path / 'model'} is a {architecture}" in output
    assert reason in output


@pytest.mark.parametrize(
    "options",
    [
        {"precision": "int8"},
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
    if options["precision"] == "int8":
        assert figures["top1_agreement"] >= MIN_TOP1["int8"], figures
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
