"""Editing the int4 graph to hold carried GGUF blocks: weights, scales, bit widths, and the offset term.

A block's offset (Q4_1's m + 8d) is added to MatMulNBits' output as (block sums of x) @ offsets:
Reshape x to [batch, sequence, K/32, 32] -> ReduceSum over the last axis -> MatMul with an float32 [K/32, N]
initializer -> Add. Nodes that read the same input (gate and up) share the block sums and one MatMul with
their offsets side by side, split after. The tied lm_head reads the embedding table through a Reshape, so it
changes with the embedding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slmdeploy_olive.gguf_blocks import BLOCK, Blocks

QUANTIZED = ("MatMulNBits", "GatherBlockQuantized")


def quantized_nodes(graph: Any) -> list[Any]:
    """The MatMulNBits nodes and the GatherBlockQuantized embedding lookup."""
    return [
        node
        for node in graph.node
        if node.op_type == "MatMulNBits" or (node.op_type == "GatherBlockQuantized" and "input_ids" in node.input)
    ]


def untie_conflicts(graph: Any, chosen: dict[str, Blocks]) -> list[str]:
    """A tied head and embedding share one table: carry both or neither. Returns the names dropped."""
    producers = {output: node for node in graph.node for output in node.output}
    nodes = {node.name: node for node in quantized_nodes(graph)}
    dropped = []
    for name, node in nodes.items():
        table = _tied_table(node, producers)
        if table is None:
            continue
        sharing = [other for other in nodes.values() if other.input[0] == table]
        if not all(other.name in chosen for other in [node, *sharing]):
            dropped += [other.name for other in [node, *sharing] if chosen.pop(other.name, None) is not None]
    return dropped


def apply(model: Any, chosen: dict[str, Blocks]) -> None:
    """Replace each chosen node's weight, scales and bit width; add the offset terms."""
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    stale: set[str] = set()
    for node in quantized_nodes(graph):
        blocks = chosen.get(node.name)
        if blocks is None:
            continue
        _set_attribute(node, "bits", blocks.bits)
        if node.op_type == "GatherBlockQuantized":
            _set_initializer(graph, node.input[0], blocks.packed.reshape(blocks.rows, -1))
            _set_initializer(graph, node.input[2], blocks.scales)
            continue
        table = _tied_table(node, producers)
        if table is not None:  # the weight is the embedding's table, set with it; only the view changes
            reshape = producers[node.input[1]]
            _set_initializer(graph, reshape.input[1], _int64(list(blocks.packed.shape)))
            stale.add(reshape.output[0])
        else:
            _set_initializer(graph, node.input[1], blocks.packed)
        _set_initializer(graph, node.input[2], blocks.scales)
    _add_offset_terms(graph, chosen)
    # Shapes recorded for the old precision stop constant folding (the head is then not prepacked).
    kept = [info for info in graph.value_info if info.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def save(model: Any, folder: Path) -> None:
    import onnx

    data = folder / "model.onnx.data"
    data.unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )


def _tied_table(node: Any, producers: dict[str, Any]) -> str | None:
    """The embedding table a MatMulNBits reads through a Reshape (a tied lm_head), else None."""
    producer = producers.get(node.input[1]) if node.op_type == "MatMulNBits" else None
    return producer.input[0] if producer is not None and producer.op_type == "Reshape" else None


def _add_offset_terms(graph: Any, chosen: dict[str, Blocks]) -> None:
    """The shared block sums go after the first node reading their input, each node's Add right after it."""
    groups: dict[str, list[Any]] = {}
    for node in graph.node:
        blocks = chosen.get(node.name)
        if node.op_type == "MatMulNBits" and blocks is not None and blocks.offsets is not None:
            groups.setdefault(node.input[0], []).append(node)
    after: dict[str, list[Any]] = {}
    for source, nodes in groups.items():
        shared, adds = _offset_nodes(graph, source, nodes, chosen)
        after[nodes[0].name] = shared
        for node, add in zip(nodes, adds, strict=True):
            after.setdefault(node.name, []).append(add)
    ordered = [made for node in graph.node for made in [node, *after.get(node.name, [])]]
    del graph.node[:]
    graph.node.extend(ordered)


def _offset_nodes(
    graph: Any, source: str, nodes: list[Any], chosen: dict[str, Blocks]
) -> tuple[list[Any], list[Any]]:
    """Block sums of `source`, one MatMul with the offsets of every node reading it, and an Add per node."""
    import numpy as np
    from onnx import helper

    prefix = nodes[0].name.rsplit("/", 1)[0] + "/gguf_offset"
    width = _attribute(nodes[0], "K") // BLOCK
    _set_initializer(graph, f"{prefix}/blocks_shape", _int64([0, 0, width, BLOCK]))
    _set_initializer(graph, f"{prefix}/last_axis", _int64([-1]))
    offsets = np.concatenate([chosen[node.name].offsets.T for node in nodes], axis=1)
    _set_initializer(graph, f"{prefix}/offsets", np.ascontiguousarray(offsets, dtype=np.float32))
    made = [
        helper.make_node("Reshape", [source, f"{prefix}/blocks_shape"], [f"{prefix}/blocks"], name=f"{prefix}/Reshape"),
        helper.make_node(
            "ReduceSum", [f"{prefix}/blocks", f"{prefix}/last_axis"], [f"{prefix}/sums"], keepdims=0, name=f"{prefix}/Sum"
        ),
        helper.make_node("MatMul", [f"{prefix}/sums", f"{prefix}/offsets"], [f"{prefix}/term"], name=f"{prefix}/MatMul"),
    ]
    terms = [f"{prefix}/term"]
    if len(nodes) > 1:
        terms = [f"{prefix}/term_{index}" for index in range(len(nodes))]
        split = _int64([_attribute(node, "N") for node in nodes])
        _set_initializer(graph, f"{prefix}/split", split)
        made.append(helper.make_node("Split", [f"{prefix}/term", f"{prefix}/split"], terms, axis=-1, name=f"{prefix}/Split"))
    adds = []
    for node, term in zip(nodes, terms, strict=True):
        output = node.output[0]
        node.output[0] = output + "_blocks"
        adds.append(helper.make_node("Add", [node.output[0], term], [output], name=node.name + "_offset"))
    return made, adds


def _int64(values: list[int]) -> Any:
    import numpy as np

    return np.array(values, dtype=np.int64)


def _set_initializer(graph: Any, name: str, array: Any) -> None:
    """Replace (or add) initializer `name`; a same-sized array keeps the old one's shape."""
    from onnx import numpy_helper

    for index, tensor in enumerate(graph.initializer):
        if tensor.name == name:
            dims = list(tensor.dims)
            if dims and array.size == math.prod(dims) and array.dtype.kind == "f":
                array = array.reshape(dims)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array, name))
            return
    graph.initializer.append(numpy_helper.from_array(array, name))


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next(helper.get_attribute_value(item) for item in node.attribute if item.name == name)


def _set_attribute(node: Any, name: str, value: int) -> None:
    for item in node.attribute:
        if item.name == name:
            item.i = value
            return
