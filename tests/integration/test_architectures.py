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

# Against the float32 PyTorch model, teacher-forced over LONG_TEXT. fp32 is exact up to float rounding for every
# architecture (the builder is given each model's norm settings: slmdeploy_olive.configs and compat; measured at most
# 4.8e-7). The quantized bounds are each architecture's own measured figures (2026-12-06, onnxruntime-genai 0.18,
# the 2-core project machine, these random 2-layer models) with room for about twice the error: the largest logit
# difference, relative to the model's logit range (the reference's largest minus smallest logit over the text), and
# the mean KL divergence at twice the measured value; top-1 agreement with twice the measured disagreement (at least
# two positions of the 108). Random weights make near-ties common, so top-1 agreement is lower than a real model's
# where the KL divergence is tiny (int4 Gemma 2: 0.47 with KL 0.0011).
FP32_LOGIT_DIFF = 1e-4  # absolute
MEASURED = {  # architecture: {precision: (relative logit difference, mean KL, top-1 agreement)}
    "Ernie4_5ForCausalLM": {"int8": (0.00409, 1.3e-06, 1.000), "int4": (0.0536, 0.00026, 1.000)},
    "Gemma2ForCausalLM": {"int8": (0.0142, 6.1e-06, 0.935), "int4": (0.167, 0.0011, 0.472)},
    "Gemma3ForCausalLM": {"int8": (0.0152, 7.6e-06, 0.935), "int4": (0.214, 0.0013, 0.620)},
    "GemmaForCausalLM": {"int8": (0.0028, 7.1e-07, 1.000), "int4": (0.037, 0.00018, 1.000)},
    "GptOssForCausalLM": {"int8": (0.155, 3.2e-05, 1.000), "int4": (0.211, 0.00088, 1.000)},
    "GraniteForCausalLM": {"int8": (0.00362, 1.2e-06, 1.000), "int4": (0.0538, 0.00027, 1.000)},
    "HunYuanDenseV1ForCausalLM": {"int8": (0.00494, 1.6e-06, 1.000), "int4": (0.068, 0.00035, 1.000)},
    "Lfm2ForCausalLM": {"int8": (0.00356, 1.3e-06, 1.000), "int4": (0.06, 0.00026, 1.000)},
    "Lfm2MoeForCausalLM": {"int8": (0.00367, 1.1e-06, 1.000), "int4": (0.0569, 0.00027, 1.000)},
    "LlamaForCausalLM": {"int8": (0.00385, 1.3e-06, 1.000), "int4": (0.0534, 0.00027, 1.000)},
    "MistralForCausalLM": {"int8": (0.00385, 1.3e-06, 1.000), "int4": (0.0534, 0.00027, 1.000)},
    "NemotronForCausalLM": {"int8": (0.00636, 4.5e-06, 1.000), "int4": (0.0706, 0.00065, 0.991)},
    "OlmoForCausalLM": {"int8": (0.00365, 1.2e-06, 1.000), "int4": (0.0495, 0.00026, 1.000)},
    "Phi3ForCausalLM": {"int8": (0.0081, 1.2e-06, 1.000), "int4": (0.0917, 0.00025, 0.759)},
    "PhiForCausalLM": {"int8": (0.00686, 2e-06, 1.000), "int4": (0.0714, 0.00036, 0.991)},
    "Qwen2ForCausalLM": {"int8": (0.00436, 1.3e-06, 1.000), "int4": (0.0775, 0.00031, 1.000)},
    "Qwen3ForCausalLM": {"int8": (0.00486, 1.7e-06, 1.000), "int4": (0.0686, 0.00036, 1.000)},
    "SmolLM3ForCausalLM": {"int8": (0.00486, 1.2e-06, 1.000), "int4": (0.0539, 0.00027, 1.000)},
}


def bounds(architecture, precision):
    """(largest relative logit difference, largest mean KL, smallest top-1 agreement) allowed."""
    difference, kl, top1 = MEASURED[architecture][precision]
    return 2 * difference, max(2 * kl, 1e-6), top1 - max(1 - top1, 0.02)


# Long enough (about 110 tokens) to pass the sliding window of the tiny Gemma 2 and 3 (64 tokens).
LONG_TEXT = " ".join([SAMPLE_TEXT] * 6)
PROMPT = "the capital of france is"
# Architectures whose norms subtract the mean (LayerNorm); the others' are RMSNorms.
LAYERNORM = {"PhiForCausalLM", "NemotronForCausalLM", "OlmoForCausalLM"}
NORMS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
         "SkipSimplifiedLayerNormalization"}  # fmt: skip


def token_ids(folder, text=SAMPLE_TEXT):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(text)["input_ids"]


def genai_greedy(folder, ids, new_tokens=8):
    """Greedy tokens after `ids` through onnxruntime-genai (slmdeploy's GenaiPackage, as the evaluators and `run` use
    it), through an end-of-sequence token as PyTorch's loop goes."""
    from slmdeploy.plugin.genai import GenaiPackage

    generation = GenaiPackage(folder).generate(ids, new_tokens, stop=False, max_length=len(ids) + new_tokens)
    return list(generation)


def torch_greedy(folder, ids, new_tokens=8):
    """Greedy tokens after `ids` from the source model in PyTorch float32 (no end-of-sequence stop)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens = list(ids)
    with torch.no_grad():
        for _ in range(new_tokens):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(ids) :]


def norm_nodes(package):
    import onnx

    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    return [node for node in graph.node if node.op_type in NORMS]


def source_norm_eps(folder):
    """The epsilons of the PyTorch model's own norm modules (read from the modules, not from a config key: OLMo's
    LayerNorm has its 1e-5 in its forward, `F.layer_norm(..., eps=1e-5)`)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    found = set()
    for module in model.modules():
        name = type(module).__name__
        if name == "OlmoLayerNorm":
            found.add(1e-5)
        elif "Norm" in name and "Gated" not in name:
            eps = next(
                (getattr(module, key) for key in ("variance_epsilon", "eps", "epsilon") if hasattr(module, key)), None
            )
            if eps is not None:
                found.add(round(float(eps), 12))
    return found


def check_norms(package, architecture, folder):
    """Every norm of the export is the source's kind (LayerNorm or RMSNorm) with the source's epsilon."""
    import onnx

    nodes = norm_nodes(package)
    assert nodes, architecture
    simplified = {"Simplified" in node.op_type for node in nodes}
    assert simplified == {architecture not in LAYERNORM}, (architecture, {node.op_type for node in nodes})
    epsilons = {
        round(onnx.helper.get_attribute_value(attribute), 12)
        for node in nodes
        for attribute in node.attribute
        if attribute.name == "epsilon"
    }
    assert epsilons == source_norm_eps(folder), (architecture, epsilons)


def quantized_figures(reference, converted, precision, ids, run_stage):
    quantized = run_stage(OliveQuantizer, converted, {"precision": precision})
    assert isinstance(quantized, QuantizedModel) and quantized.precision == precision
    figures = compare(reference, genai_logits(quantized.path, ids), ids)
    figures["relative_logit_diff"] = figures["max_abs_logit_diff"] / float(reference.max() - reference.min())
    return quantized, figures


@pytest.mark.parametrize("architecture", sorted(architectures.CONVERTS))
def test_converts_quantizes_and_answers(architecture, tiny_model, tiny_onnx_model, run_stage, record_property):
    folder = tiny_model(architectures.CONVERTS[architecture])
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [architecture]
    ids = token_ids(folder, LONG_TEXT)
    reference = torch_logits(folder, ids)
    # The olive converter with its defaults, as run_stage(OliveConverter, SourceModel(folder)) runs it, made once a
    # session: the serving engine's tests take the same conversion
    converted = tiny_onnx_model(architectures.CONVERTS[architecture], convert=True)
    assert isinstance(converted, OnnxModel) and converted.precision == "fp32"
    check_norms(converted.path, architecture, folder)
    fp32 = compare(reference, genai_logits(converted.path, ids), ids)
    record_property(f"{architecture}-fp32", json.dumps(fp32))
    assert fp32["max_abs_logit_diff"] < FP32_LOGIT_DIFF, fp32
    assert fp32["top1_agreement"] == 1.0, fp32
    prompt = token_ids(folder, PROMPT)
    assert genai_greedy(converted.path, prompt) == torch_greedy(folder, prompt)
    for precision in ("int8", "int4"):
        quantized, figures = quantized_figures(reference, converted, precision, ids, run_stage)
        record_property(f"{architecture}-{precision}", json.dumps(figures))
        largest_difference, largest_kl, smallest_top1 = bounds(architecture, precision)
        assert figures["relative_logit_diff"] < largest_difference, (precision, figures)
        assert figures["mean_kl"] < largest_kl, (precision, figures)
        assert figures["top1_agreement"] >= smallest_top1, (precision, figures)
    assert (quantized.path / "tokenizer.json").is_file()
    # A long prompt read in chunks (past the tiny Gemmas' 64-token window) computes what one step does.
    (whole, _), (chunked, _) = prefill_then_greedy(quantized.path, 0, ids), prefill_then_greedy(quantized.path, 24, ids)
    assert abs(chunked - whole).max() < 1e-3 * max(1.0, float(abs(whole).max())), architecture


def test_olmo_norms_subtract_the_mean_where_the_eps_does_not_dominate(tiny_model, run_stage):
    """Weights scaled up so the hidden states' variance is far above the norms' epsilon: an RMSNorm export (what
    the builder makes of OLMo by itself) or a wrong epsilon shows in the logits, not only in the graph."""
    folder = tiny_model("olmo", initializer_range=0.5)
    ids = token_ids(folder, LONG_TEXT)
    reference = torch_logits(folder, ids)
    converted = run_stage(OliveConverter, SourceModel(folder))
    check_norms(converted.path, "OlmoForCausalLM", folder)
    figures = compare(reference, genai_logits(converted.path, ids), ids)
    assert figures["max_abs_logit_diff"] < 1e-5 * float(reference.max() - reference.min()), figures
    assert figures["top1_agreement"] == 1.0, figures


@pytest.mark.parametrize(
    ("model_type", "setting"),
    [("olmo", {"clip_qkv": 8.0}), ("phi", {"qk_layernorm": True}), ("gemma2", {"use_bidirectional_attention": True})],
)
def test_plan_refuses_a_setting_the_builder_ignores(model_type, setting, tiny_model, slmdeploy_project):
    ((key, _),) = setting.items()
    config = json.loads((tiny_model(model_type) / "config.json").read_text()) | setting
    project = slmdeploy_project(
        '[project]\nname = "m"\n[source]\npath = "model"\n[convert]\nplugin = "olive"\n',
        files={"model/config.json": json.dumps(config)},
    )
    result = project.cli("plan")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    described = f"the model in {project.path / 'model'} is a {config['architectures'][0]} with {key} = "
    assert f"slmdeploy.toml:4: {described}" in output
    assert "model builder ignores" in output and "Traceback" not in output


def test_every_architecture_the_builder_lists_converts_or_is_refused():
    listed = set(architectures.supported())
    assert listed <= set(architectures.CONVERTS) | set(architectures.REFUSED), "classify the builder's new ones"
    assert not set(architectures.CONVERTS) & set(architectures.REFUSED)


def test_a_sliding_window_model_answers_with_a_context_shorter_than_its_window(tiny_model, run_stage):
    folder = tiny_model("gemma2", sliding_window=128)
    converted = run_stage(OliveConverter, SourceModel(folder))
    genai = json.loads((converted.path / "genai_config.json").read_text())
    assert "sliding_window" not in genai["model"]["decoder"]  # full-length caches: any max_length runs
    prompt = token_ids(folder, PROMPT)
    assert genai_greedy(converted.path, prompt, 4) == torch_greedy(folder, prompt, 4)


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
        {"precision": "int4", "algorithm": "rtn", "symmetric": False, "block_size": 16},
        {"precision": "int4", "accuracy_level": 1, "keep_float": ["/lm_head/MatMul"]},
        {"precision": "int8", "quantize_embeddings": True},
        {"precision": "fp32"},
    ],
)
def test_quantization_options(options, tiny_model, tiny_onnx_model, run_stage):
    import onnx

    folder = tiny_model("llama")
    ids = token_ids(folder)
    reference = torch_logits(folder, ids)
    converted = tiny_onnx_model("llama", convert=True)  # converted once for every option (and other test modules)
    quantized = run_stage(OliveQuantizer, converted, options)
    figures = compare(reference, genai_logits(quantized.path, ids), ids)
    precision = options["precision"]
    if precision == "fp32":
        assert figures["max_abs_logit_diff"] < FP32_LOGIT_DIFF, figures
    else:
        # the Llama bounds of the default quantization: each option here keeps at least its fidelity
        largest_difference, largest_kl, _ = bounds("LlamaForCausalLM", precision)
        relative = figures["max_abs_logit_diff"] / float(reference.max() - reference.min())
        assert relative < largest_difference, (relative, figures)
        assert figures["mean_kl"] < largest_kl, figures
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
