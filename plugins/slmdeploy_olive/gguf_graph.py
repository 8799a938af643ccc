"""Editing the int4 graph to hold carried GGUF blocks: weights, scales, bit widths, and the offset term.

A block's offset (Q4_1's m + 8d) is added to MatMulNBits' output as (block sums of x) @ offsets: x viewed as
[.., K/B, B] (B the node's block_size: 32 for a GGUF) -> ReduceSum over the last axis gives the block sums ->
MatMul with float32 [K/B, N] offsets -> Add; scales and offsets are stored as fp16 where that is exact
(`gguf_narrow`). Nodes that read the same input (gate and up) become one MatMulNBits with their weights side by
side, one offset term, and a Split after. The tied lm_head reads the embedding table through a Reshape, so it
changes with the embedding. `q4_1` puts blocks made from float weights into the same form.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slmdeploy_olive.gguf_blocks import BLOCK, Blocks
from slmdeploy_olive.gguf_narrow import narrow_scales, offsets_subgraph
from slmdeploy_olive.nodes import drop_shapes


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
    for node in nodes.values():
        table = tied_table(node, producers)
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
        table = tied_table(node, producers)
        if table is not None:  # the weight is the embedding's table, set with it; only the view changes
            reshape = producers[node.input[1]]
            _set_initializer(graph, reshape.input[1], _int64(list(blocks.packed.shape)))
            stale.add(reshape.output[0])
        else:
            _set_initializer(graph, node.input[1], blocks.packed)
        _set_initializer(graph, node.input[2], blocks.scales)
    _add_offset_terms(graph, chosen)
    narrow_scales(graph)
    # Shapes recorded for the old precision stop constant folding (the head is then not prepacked).
    drop_shapes(graph, lambda info: info.name in stale)


def untied_head(graph: Any) -> bool:
    """Whether the head is a MatMulNBits with a table of its own beside a block-quantized embedding lookup."""
    producers = {output: node for node in graph.node for output in node.output}
    head = producers.get("logits")
    lookup = any(node.op_type == "GatherBlockQuantized" for node in quantized_nodes(graph))
    return head is not None and head.op_type == "MatMulNBits" and lookup and tied_table(head, producers) is None


def tie_head(graph: Any, reference: Any) -> bool:
    """Point an untied block-quantized head at the embedding lookup's table (through a Reshape, as a tied head
    reads it) when the float32 export's two tables are equal and both nodes hold the same bits and block size.
    Two quantizers made them (Olive's keep_int8 pass at 8 bits rounds a few values differently for each, so its
    tying surgery leaves both); the embedding's blocks serve both, and the package holds one table. `reference`:
    the export's weights (`gguf_carry.ReferenceWeights`). Returns whether it changed the graph."""
    import numpy as np
    from onnx import helper

    producers = {output: node for node in graph.node for output in node.output}
    head = producers.get("logits")
    embedding = next((node for node in quantized_nodes(graph) if node.op_type == "GatherBlockQuantized"), None)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if head is None or embedding is None or head.op_type != "MatMulNBits" or head.input[1] not in initializers:
        return False
    same = all(attribute(head, name) == attribute(embedding, name) for name in ("bits", "block_size"))
    points = [node.input[3] for node in (head, embedding) if len(node.input) > 3 and node.input[3]]
    table, weight = reference.weight(embedding), reference.weight(head)
    if not same or points or table is None or weight is None or not np.array_equal(table, weight):
        return False
    view = f"{head.name}/tied_table"
    shape = list(initializers[head.input[1]].dims)
    _set_initializer(graph, f"{view}_shape", _int64(shape))
    reshape = helper.make_node("Reshape", [embedding.input[0], f"{view}_shape"], [view], name=f"{head.name}/Tie")
    head.input[1], head.input[2] = view, embedding.input[2]
    nodes = [reshape, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_dead_nodes(graph)
    _drop_unused_initializers(graph)
    return True


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


def tied_table(node: Any, producers: dict[str, Any]) -> str | None:
    """The embedding table a MatMulNBits reads through a Reshape (a tied lm_head), else None."""
    producer = producers.get(node.input[1]) if node.op_type == "MatMulNBits" else None
    return producer.input[0] if producer is not None and producer.op_type == "Reshape" else None


def _add_offset_terms(graph: Any, chosen: dict[str, Blocks]) -> None:
    """Each group of nodes reading one input is replaced, where its first node was, by its offset chain."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for node in graph.node:
        blocks = chosen.get(node.name)
        if node.op_type == "MatMulNBits" and blocks is not None and blocks.offsets is not None:
            groups.setdefault((node.input[0], blocks.bits), []).append(node)
    chains: dict[str, list[Any]] = {}
    replaced: set[str] = set()
    for nodes in groups.values():
        chains[nodes[0].name] = _offset_chain(graph, nodes, chosen)
        replaced.update(node.name for node in nodes)
    ordered = [made for node in graph.node for made in chains.get(node.name, [] if node.name in replaced else [node])]
    del graph.node[:]
    graph.node.extend(ordered)
    _drop_unused_initializers(graph)


def _offset_chain(graph: Any, nodes: list[Any], chosen: dict[str, Blocks]) -> list[Any]:
    """x's block sums (Reshape, ReduceSum); the weight's MatMulNBits, nodes reading the same input fused along
    N (one kernel call instead of several); sums @ offsets; Add; a Split back into the nodes' outputs."""
    import numpy as np
    from onnx import helper

    from slmdeploy_olive.gguf_blocks import concatenated

    prefix = nodes[0].name.rsplit("/", 1)[0] + "/gguf_offset"
    source, outputs = nodes[0].input[0], [node.output[0] for node in nodes]
    blocks = concatenated([chosen[node.name] for node in nodes])
    assert blocks is not None and blocks.offsets is not None  # grouped by bit width, all with offsets
    matmul = nodes[0] if len(nodes) == 1 else _fused(graph, nodes, blocks, prefix)
    matmul.output[0] = f"{prefix}/weights_product"
    k, size = attribute(nodes[0], "K"), attribute(nodes[0], "block_size")
    in_blocks = f"gguf_blocks_of_{k}" + ("" if size == BLOCK else f"_by_{size}")  # one per K and block size
    _set_initializer(graph, in_blocks, _int64([0, 0, k // size, size]))  # [batch, sequence, K] as [.., K/B, B]
    _set_initializer(graph, "gguf_last_axis", _int64([-1]))
    offsets = np.ascontiguousarray(blocks.offsets.T, dtype=np.float32)
    scales = (matmul.input[2], np.asarray(blocks.scales, dtype=np.float32).reshape(blocks.rows, -1))
    total = outputs[0] if len(nodes) == 1 else f"{prefix}/sum"
    chain = [
        *offsets_subgraph(graph, prefix, offsets, scales),
        helper.make_node("Reshape", [source, in_blocks], [f"{prefix}/blocks"], name=f"{prefix}/Blocks"),
        helper.make_node(
            "ReduceSum", [f"{prefix}/blocks", "gguf_last_axis"], [f"{prefix}/sums"], keepdims=0, name=f"{prefix}/Sums"
        ),
        matmul,
        helper.make_node("MatMul", [f"{prefix}/sums", f"{prefix}/offsets"], [f"{prefix}/term"], name=f"{prefix}/Term"),
        helper.make_node("Add", [matmul.output[0], f"{prefix}/term"], [total], name=f"{prefix}/Add"),
    ]
    if len(nodes) > 1:
        _set_initializer(graph, f"{prefix}/split", _int64([attribute(node, "N") for node in nodes]))
        chain.append(helper.make_node("Split", [total, f"{prefix}/split"], outputs, axis=-1, name=f"{prefix}/Split"))
    return chain


def _fused(graph: Any, nodes: list[Any], blocks: Blocks, prefix: str) -> Any:
    """One MatMulNBits holding the weights of `nodes` (same input, same K) side by side."""
    from onnx import helper

    _set_initializer(graph, f"{prefix}/weight", blocks.packed)
    _set_initializer(graph, f"{prefix}/scales", blocks.scales.reshape(-1))
    attributes = {item.name: helper.get_attribute_value(item) for item in nodes[0].attribute}
    attributes["N"] = blocks.rows
    inputs = [nodes[0].input[0], f"{prefix}/weight", f"{prefix}/scales"]
    return helper.make_node(
        "MatMulNBits", inputs, ["_"], name=f"{prefix}/MatMulNBits", domain="com.microsoft", **attributes
    )


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes none of whose outputs is read (a Cast that widened scales no longer used), repeatedly."""
    outputs = {item.name for item in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        kept = [node for node in graph.node if any(output in used for output in node.output)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


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


def attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next(helper.get_attribute_value(item) for item in node.attribute if item.name == name)


def _set_attribute(node: Any, name: str, value: int) -> None:
    for item in node.attribute:
        if item.name == name:
            item.i = value
            return
