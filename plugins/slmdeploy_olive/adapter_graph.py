"""A runtime-adapter graph with q, k and v in one MatMul again, and one LoRA pair for the three.

The model builder unfuses the attention's q, k and v projections as soon as a model has a LoRA adapter (its
packed MatMul "is not supported with LoRA"), so a base built for runtime adapters reads its input three times, in
three kernel calls, with up to three LoRA chains (two MatMuls and an Add each) beside them. Measured on the demo
(int4, round-to-nearest, 2 threads): that base alone decoded at 0.80x the plain package's speed.

Here, in the float32 export, each layer whose GroupQueryAttention reads exactly three such projections of one input
gets them back as one ``qkv_proj`` MatMul (the weights side by side, q, k, v, as the builder packs them, so that the
quantize stage and a GGUF source's blocks treat it as they treat the plain model), GroupQueryAttention reads the
packed output, and the LoRA of all three is one chain: ``x @ A`` with ``A = [A_q | A_k | A_v]`` (the ranks of the
projections an adapter targets, side by side) and ``@ B`` with each ``B`` in its own rows and columns (zeros
elsewhere), so ``x @ A @ B`` is each projection's own LoRA term in its own columns: the same sum, exactly, as three
chains. An adapter that targets none of the three gives the pair a rank of 0, as before. A layer that does not have
that shape (biases on the projections, Q/K norms between them and the attention) keeps the builder's layout.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

QKV = ("q_proj", "k_proj", "v_proj")
PACKED = "qkv_proj"
ATTENTION = re.compile(r"^/model/layers\.(\d+)/attn/GroupQueryAttention$")


@attrs.frozen
class Packed:
    """A layer whose q, k and v were packed: each projection's output width, in the packed order."""

    widths: tuple[int, ...]

    def columns(self, projection: str) -> slice:
        """Where `projection`'s outputs are in the packed output."""
        start = sum(self.widths[: QKV.index(projection)])
        return slice(start, start + self.widths[QKV.index(projection)])


def pack_qkv(model: Any) -> dict[int, Packed]:
    """Pack q, k and v (and their LoRA chains) in every layer of `model` (loaded with its weights) that allows it;
    the packed layers, by layer index."""
    graph = model.graph
    by_name = {node.name: node for node in graph.node}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    packed: dict[int, Packed] = {}
    made: dict[int, list[Any]] = {}
    removed: dict[str, int] = {}  # a removed node's name: its layer
    for node in graph.node:  # every change to the graph's nodes first, then one new node list
        match = ATTENTION.match(node.name)
        chains = _chains(node, by_name, initializers, readers) if match else None
        if match and chains is not None:
            layer = int(match.group(1))
            packed[layer], made[layer] = _pack(graph, node, layer, chains, initializers)
            removed |= {old.name: layer for base, nodes in chains for old in (base, *nodes)}
    if packed:
        _forget(graph, [node for node in graph.node if node.name in removed])
        ordered = []
        for node in graph.node:  # each layer's new nodes where its first removed node was
            if node.name not in removed:
                ordered.append(node)
            elif removed[node.name] in made:
                ordered.extend(made.pop(removed[node.name]))
        del graph.node[:]
        graph.node.extend(ordered)
    return packed


def _chains(
    attention: Any, by_name: dict[str, Any], initializers: dict[str, Any], readers: dict[str, int]
) -> list[tuple[Any, list[Any]]] | None:
    """q, k and v's base MatMul and LoRA nodes (A, B, Add: or none), when the attention reads exactly them, each
    MatMul of one shared input by a stored weight, and nothing else reads what is removed; else None."""
    prefix = attention.name.rsplit("/", 1)[0]
    chains = []
    for index, projection in enumerate(QKV):
        base = by_name.get(f"{prefix}/{projection}/MatMul")
        if base is None or base.op_type != "MatMul" or base.input[1] not in initializers:
            return None
        lora = [by_name.get(f"{prefix}/{projection}/{part}") for part in ("lora_A/MatMul", "lora_B/MatMul", "lora/Add")]
        if any(node is None for node in lora) and any(node is not None for node in lora):
            return None
        nodes = [node for node in lora if node is not None]
        output = nodes[-1].output[0] if nodes else base.output[0]
        if attention.input[index] != output or readers.get(output) != 1:
            return None
        if nodes and (nodes[0].input[0] != base.input[0] or readers.get(base.output[0]) != 1):
            return None
        chains.append((base, nodes))
    if len({base.input[0] for base, _ in chains}) != 1:
        return None
    return chains


def _pack(
    graph: Any, attention: Any, layer: int, chains: list[tuple[Any, list[Any]]], initializers: dict[str, Any]
) -> tuple[Packed, list[Any]]:
    """The packed weight and LoRA inputs added, the attention reading the packed output; the nodes to put in place
    of the chains'."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    prefix = f"/model/layers.{layer}/attn/{PACKED}"
    source = chains[0][0].input[0]
    weights = [numpy_helper.to_array(initializers[base.input[1]]) for base, _ in chains]
    widths = tuple(int(weight.shape[1]) for weight in weights)
    weight_name = f"model.layers.{layer}.attn.{PACKED}.MatMul.weight"
    made = [helper.make_node("MatMul", [source, weight_name], [f"{prefix}/MatMul/output_0"], name=f"{prefix}/MatMul")]
    graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), weight_name))
    output = f"{prefix}/MatMul/output_0"
    if any(nodes for _, nodes in chains):  # one LoRA pair for the three, its rank a dimension of its own
        rank = f"lora_r.{layer}.{PACKED}"
        a, b = (f"model.layers.{layer}.attn.{PACKED}.lora_{side}.MatMul.weight" for side in "AB")
        inside, total = int(weights[0].shape[0]), sum(widths)
        graph.input.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, [inside, rank]))
        graph.input.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, [rank, total]))
        graph.initializer.append(numpy_helper.from_array(np.zeros((inside, 0), np.float32), a))  # rank 0: no adapter
        graph.initializer.append(numpy_helper.from_array(np.zeros((0, total), np.float32), b))
        low, delta, total_name = (
            f"{prefix}/{part}/output_0" for part in ("lora_A/MatMul", "lora_B/MatMul", "lora/Add")
        )
        made += [
            helper.make_node("MatMul", [source, a], [low], name=f"{prefix}/lora_A/MatMul"),
            helper.make_node("MatMul", [low, b], [delta], name=f"{prefix}/lora_B/MatMul"),
            helper.make_node("Add", [output, delta], [total_name], name=f"{prefix}/lora/Add"),
        ]
        output = total_name
    attention.input[0], attention.input[1], attention.input[2] = output, "", ""
    return Packed(widths), made


def _forget(graph: Any, removed: list[Any]) -> None:
    """The removed nodes' weights, LoRA inputs and their empty defaults, and their outputs' shapes."""
    read = {name for node in removed for name in node.input[1:]}
    names = {node.name for node in removed}
    still = {name for node in graph.node if node.name not in names for name in node.input}
    gone = read - still
    for field in (graph.initializer, graph.input):
        kept = [item for item in field if item.name not in gone]
        del field[:]
        field.extend(kept)
    outputs = {name for node in removed for name in node.output}
    kept_info = [item for item in graph.value_info if item.name not in outputs]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def grouped(pairs: dict[tuple[int, str], tuple[Any, Any]], packed: dict[int, Packed]) -> dict[tuple[int, str], Any]:
    """An adapter's LoRA pairs laid out for the graph: in a packed layer, its q, k and v pairs become one,
    ``A = [A_q | A_k | A_v]`` (those it has) and ``B`` with each projection's rows in its own columns."""
    import numpy as np

    laid: dict[tuple[int, str], Any] = {}
    by_layer: dict[int, list[tuple[str, Any, Any]]] = {}
    for (layer, projection), (a, b) in pairs.items():
        if layer in packed and projection in QKV:
            by_layer.setdefault(layer, []).append((projection, a, b))
        else:
            laid[(layer, projection)] = (a, b)
    for layer, found in by_layer.items():
        found.sort(key=lambda item: QKV.index(item[0]))
        a = np.concatenate([item[1] for item in found], axis=1)
        b = np.zeros((a.shape[1], sum(packed[layer].widths)), dtype=np.float32)
        row = 0
        for projection, pair_a, pair_b in found:
            b[row : row + pair_a.shape[1], packed[layer].columns(projection)] = pair_b
            row += pair_a.shape[1]
        laid[(layer, PACKED)] = (np.ascontiguousarray(a, dtype=np.float32), b)
    return laid
