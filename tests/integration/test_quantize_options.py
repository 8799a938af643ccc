"""The quantize options that change what is quantized, on a tiny model: k_quant honours quantize_embeddings (the
table quantized with the same k-quant blocks and shared with lm_head), keep_int8 keeps parts at 8 bits, and what
cannot be honoured is refused."""

from __future__ import annotations

import pytest

from slmdeploy.plugin import ConfigError, SourceModel
from slmdeploy.testing.fidelity import compare, genai_logits, torch_logits
from slmdeploy.testing.models import SAMPLE_TEXT
from slmdeploy_olive.convert import OliveConverter
from slmdeploy_olive.quantize import OliveQuantizer


def nodes(folder):
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return {node.name: node for node in graph.node}


def bits(node):
    return next(attribute.i for attribute in node.attribute if attribute.name == "bits")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from slmdeploy.testing.models import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tie_word_embeddings=True)
    return folder


@pytest.fixture
def export(source, run_stage):
    return source, run_stage(OliveConverter, SourceModel(source))


def ids_of(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(SAMPLE_TEXT)["input_ids"]


@pytest.mark.parametrize("embeddings", [True, False])
def test_k_quant_honours_quantize_embeddings(export, run_stage, embeddings):
    source, onnx_model = export
    made = run_stage(OliveQuantizer, onnx_model, {"algorithm": "k_quant", "quantize_embeddings": embeddings})
    graph = nodes(made.path)
    lookups = [node for node in graph.values() if "input_ids" in node.input and node.op_type.startswith("Gather")]
    assert [node.op_type for node in lookups] == ["GatherBlockQuantized" if embeddings else "Gather"]
    if embeddings:  # tied: the head reads the embedding's k-quant blocks, one table for both
        head = next(node for node in graph.values() if node.op_type == "MatMulNBits" and "logits" in node.output)
        assert set(head.input[2:]) <= set(lookups[0].input)
    ids = ids_of(source)
    figures = compare(torch_logits(source, ids), genai_logits(made.path, ids), ids)
    assert figures["top1_agreement"] >= 0.6, figures


def test_keep_int8_puts_the_named_parts_at_8_bits(export, run_stage):
    _, onnx_model = export
    made = run_stage(OliveQuantizer, onnx_model, {"keep_int8": ["lm_head", "embeddings", "last_layer"]})
    quantized = {name: bits(node) for name, node in nodes(made.path).items() if node.op_type == "MatMulNBits"}
    eights = sorted(name for name, value in quantized.items() if value == 8)
    assert "/lm_head/MatMul_Q8" in eights and all("layers.0/" not in name for name in eights)
    assert any("layers.1/" in name for name in eights) and any(value == 4 for value in quantized.values())
    lookup = next(node for node in nodes(made.path).values() if "input_ids" in node.input and "Gather" in node.op_type)
    assert lookup.op_type == "GatherBlockQuantized" and bits(lookup) == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "hqq", "precision": "int8"}, "algorithm hqq makes int4 only"),
        ({"keep_int8": ["lm_head"], "precision": "int8"}, "keep_int8 keeps parts of an int4 model"),
    ],
)
def test_options_that_cannot_be_honoured_are_refused(run_stage, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_stage(OliveQuantizer, SourceModel(tmp_path), options)


def logits_shape(folder, graph_file="model.onnx"):
    import onnx

    graph = onnx.load(str(folder / graph_file), load_external_data=False).graph
    logits = next(output for output in graph.output if output.name == "logits")
    return [dim.dim_value or dim.dim_param for dim in logits.type.tensor_type.shape.dim]


@pytest.mark.parametrize("all_logits", [False, True])
def test_the_lm_head_runs_for_the_last_position_unless_all_logits(source, run_stage, all_logits):
    """By default the head projects only the last position (the runtime reads only that one: a prompt's prefill
    skips the rest, and its vocabulary x length logits buffer is never made); all_logits keeps every position."""
    import numpy as np
    import onnxruntime_genai as og

    from slmdeploy.plugin.genai import ALL_LOGITS_GRAPH, load_genai_model

    exported = run_stage(OliveConverter, SourceModel(source), {"all_logits": all_logits})
    made = run_stage(OliveQuantizer, exported, {"precision": "int4"})
    for folder in (exported.path, made.path):
        assert logits_shape(folder)[1] == ("sequence_length" if all_logits else 1)
        twin = folder / ALL_LOGITS_GRAPH  # for the batching Engine: every position's logits, the same weights
        assert twin.is_file() != all_logits
        if twin.is_file():
            assert logits_shape(folder, twin.name)[1] == "sequence_length"
            assert twin.stat().st_size < 1_000_000  # the graph alone: its tensors are in model.onnx.data
    model = load_genai_model(made.path)
    ids = ids_of(source)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 4, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(ids, dtype=np.int32))
    assert np.asarray(generator.get_output("logits")).shape[1] == (len(ids) if all_logits else 1)
    last = np.asarray(generator.get_logits()).reshape(-1)
    reference = torch_logits(source, ids)[-1]
    assert int(last[: reference.shape[0]].argmax()) == int(reference.argmax())  # the prompt's last position
    if not all_logits:  # the twin, loaded as the server loads it: a batch of two prompts of different lengths
        engine = og.Engine(load_genai_model(made.path, all_logits=True))
        requests = [engine.create_request() for _ in range(2)]
        for request, prompt in zip(requests, (ids, ids[: len(ids) // 2]), strict=True):
            options = og.TurnOptions(request)
            options.set_max_generated_tokens(3)
            options.set_do_sample(False)
            request.begin_turn(np.array(prompt, dtype=np.int32), options)
        events = [event for _ in range(10) for event in engine.run(engine.create_event_buffer(8))]
        answered = [event.request for event in events if int(event.flags) & 1]  # TOKEN events
        assert [answered.count(request) for request in requests] == [3, 3], events
        first = next(event.token for event in events if int(event.flags) & 1 and event.request == requests[0])
        assert first == int(reference.argmax())  # the longer prompt's own last position, in a padded batch
