"""The all-positions twin of a decoder graph whose lm_head reads the last position only.

The builder's ``prune_lm_head`` puts a Gather (position -1) and an Unsqueeze before the lm_head, and declares
``logits`` as [batch, 1, vocabulary]: onnxruntime-genai's generators then read that one position ("trimmed prefill
logits"). Its batching Engine pads prompts of different lengths and reads each one's own last position, so it needs
every position's logits: the twin, `ALL_LOGITS_GRAPH`, is the same graph without the two nodes, on the same weights
file (its tensors are references into ``model.onnx.data``; only the graph, a few hundred kB, is written again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmdeploy.plugin.genai import ALL_LOGITS_GRAPH
from slmdeploy_olive.nodes import drop_shapes

PRUNING = ("/lm_head/prune/Gather", "/lm_head/prune/Unsqueeze")


def write_all_logits_twin(folder: Path) -> bool:
    """Write `ALL_LOGITS_GRAPH` beside ``model.onnx`` when its lm_head is pruned; False (and nothing written) when
    it is not."""
    import onnx

    (folder / ALL_LOGITS_GRAPH).unlink(missing_ok=True)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    if not all(name in nodes for name in PRUNING):
        return False
    gather, unsqueeze = (nodes[name] for name in PRUNING)
    hidden, pruned = gather.input[0], unsqueeze.output[0]
    for node in graph.node:
        node.input[:] = [hidden if name == pruned else name for name in node.input]
    kept = [node for node in graph.node if node.name not in PRUNING]
    del graph.node[:]
    graph.node.extend(kept)
    for output in graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].Clear()
            output.type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    removed = {gather.output[0], pruned}
    drop_shapes(graph, lambda info: info.name in removed or _one_position_head_value(info))
    onnx.save_model(model, str(folder / ALL_LOGITS_GRAPH))
    return True


def _one_position_head_value(info: Any) -> bool:
    """An intermediate value between the head and ``logits`` recorded with a sequence dimension of 1."""
    dims = info.type.tensor_type.shape.dim
    return len(dims) == 3 and dims[1].HasField("dim_value") and dims[1].dim_value == 1 and "lm_head" in info.name
