"""Issue 13's bad inputs that need the ML libraries: ``[quantize] keep_float`` names checked against the model."""

from __future__ import annotations

import pytest

from slmdeploy.plugin import ConfigError

onnx = pytest.importorskip("onnx")


def _graph(folder):
    """A tiny graph with the node names a converted model has: a MatMul, the embedding Gather and lm_head."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"], name="/model/embed_tokens/Gather"),
        helper.make_node("MatMul", ["embedded", "w1"], ["hidden"], name="/model/layers.0/mlp/up_proj/MatMul"),
        helper.make_node("MatMul", ["hidden", "w2"], ["logits"], name="/lm_head/MatMul"),
    ]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    graph = helper.make_graph(nodes, "tiny", [value("input_ids")], [value("logits")])
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    return folder / "model.onnx"


@pytest.mark.integration
def test_keep_float_names_that_exist_pass(tmp_path):
    from slmdeploy_olive.nodes import check_keep_float

    check_keep_float(_graph(tmp_path), ["/lm_head/MatMul", "/model/embed_tokens/Gather"])


@pytest.mark.integration
def test_keep_float_name_that_matches_nothing_lists_the_nearest(tmp_path):
    from slmdeploy_olive.nodes import check_keep_float

    with pytest.raises(ConfigError) as raised:
        check_keep_float(_graph(tmp_path), ["/lm_head/Matmul"])
    message = str(raised.value)
    assert message.startswith("[quantize] keep_float: keep_float names '/lm_head/Matmul', which is no MatMul")
    assert "Nearest: /lm_head/MatMul" in message
