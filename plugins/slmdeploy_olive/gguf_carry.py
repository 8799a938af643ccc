"""Carrying a GGUF source's quantization blocks into the int4 graph instead of quantizing its weights again.

The int4 graph made by the RTN pass has a MatMulNBits node per weight and a GatherBlockQuantized embedding.
Each is matched to the GGUF tensors it came from (q, k and v fused into one qkv node, in that order), and the
GGUF's blocks replace the RTN ones when they decode to exactly the float32 export's weight (the transformers
dequantization the export was made from); otherwise the node keeps its requantized weight and the report
says why. Runs in the quantize worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy_olive import gguf_blocks
from slmdeploy_olive.gguf_blocks import Blocks

REPORT = "quantization.json"
LAYER_NODE = re.compile(r"/model/layers\.(\d+)/(\w+/\w+)/MatMul_Q4$")
LAYER_PARTS = {
    "attn/qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "attn/q_proj": ("attn_q",),
    "attn/k_proj": ("attn_k",),
    "attn/v_proj": ("attn_v",),
    "attn/o_proj": ("attn_output",),
    "mlp/gate_proj": ("ffn_gate",),
    "mlp/up_proj": ("ffn_up",),
    "mlp/down_proj": ("ffn_down",),
}
# Relative to the weight's largest magnitude: float rounding of d*q + m against d*(q-8) + (m+8d), no more.
EXACT = 1e-6


def carry_blocks(folder: Path, export: Path, gguf: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Put `gguf`'s blocks into the int4 model in `folder` wherever they hold the export's exact weights;
    write `quantization.json` and return its content."""
    import onnx

    from slmdeploy_olive import gguf_graph

    model = onnx.load(str(folder / "model.onnx"))
    chosen, report = _choose(model.graph, ReferenceWeights(export / "model.onnx"), _gguf_tensors(gguf), _heads(folder))
    gguf_graph.apply(model, chosen)
    gguf_graph.save(model, folder)
    report = {"source": gguf.name, **report}
    (folder / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    progress(summary(report))
    return report


def _choose(
    graph: Any, reference: ReferenceWeights, tensors: dict[str, tuple[str, Any]], heads: dict[str, int]
) -> tuple[dict[str, Blocks], dict[str, dict[str, str]]]:
    """The blocks of each node that can carry them, and what was carried (GGUF tensors) or requantized (why)."""
    from slmdeploy_olive import gguf_graph

    chosen: dict[str, Blocks] = {}
    carried: dict[str, str] = {}
    requantized: dict[str, str] = {}
    for node in gguf_graph.quantized_nodes(graph):
        names = _gguf_names(node, tensors)
        lookup = node.op_type == "GatherBlockQuantized"
        blocks, reason = _matching_blocks(names, tensors, reference.weight(node), heads, lookup)
        if blocks is None:
            requantized[node.name] = reason
            continue
        chosen[node.name] = blocks
        carried[node.name] = "+".join(f"{name}:{tensors[name][0]}" for name in names)
    for name in gguf_graph.untie_conflicts(graph, chosen):
        requantized[name] = "the tied embedding and lm_head must both be carried"
        carried.pop(name, None)
    return chosen, {"carried": carried, "requantized": requantized}


def summary(report: dict[str, Any]) -> str:
    kinds: dict[str, int] = {}
    for parts in report["carried"].values():
        for part in parts.split("+"):
            kind = part.rsplit(":", 1)[1]
            kinds[kind] = kinds.get(kind, 0) + 1
    counted = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return (
        f"kept the blocks of {report['source']} in {len(report['carried'])} nodes ({counted or 'none'}); "
        f"requantized {len(report['requantized'])}"
    )


def _gguf_tensors(path: Path) -> dict[str, tuple[str, Any]]:
    from gguf import GGUFReader

    return {tensor.name: (tensor.tensor_type.name, tensor.data) for tensor in GGUFReader(str(path)).tensors}


def _heads(folder: Path) -> dict[str, int]:
    decoder = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    return {"attn_q": int(decoder["num_attention_heads"]), "attn_k": int(decoder["num_key_value_heads"])}


def _gguf_names(node: Any, tensors: dict[str, Any]) -> list[str]:
    """The GGUF tensors a quantized node was made from, stacked along N; [] for an unknown node."""
    if node.op_type == "GatherBlockQuantized":
        return ["token_embd.weight"]
    if node.name == "/lm_head/MatMul_Q4":
        return ["output.weight" if "output.weight" in tensors else "token_embd.weight"]
    found = LAYER_NODE.match(node.name)
    if not found or found.group(2) not in LAYER_PARTS:
        return []
    return [f"blk.{found.group(1)}.{part}.weight" for part in LAYER_PARTS[found.group(2)]]


def _matching_blocks(
    names: list[str], tensors: dict[str, tuple[str, Any]], weight: Any, heads: dict[str, int], lookup: bool
) -> tuple[Blocks | None, str]:
    """The node's blocks if every part decodes to its rows of `weight` (float32 [N, K]), else a reason."""
    if not names or weight is None:
        return None, "no GGUF tensor matches this node"
    missing = [name for name in names if name not in tensors]
    unsupported = [f"{name} is {tensors[name][0]}" for name in names if tensors[name][0] not in gguf_blocks.LAYOUTS]
    if missing or unsupported:
        return None, "; ".join([*(f"{name} not in the GGUF" for name in missing), *unsupported])
    parts, row = [], 0
    for name in names:
        blocks = gguf_blocks.from_ggml(*tensors[name])
        exact = _exact_variant(blocks, weight[row : row + blocks.rows], heads.get(name.split(".")[-2]))
        if exact is None:
            return None, f"{name}'s blocks do not decode to the exported weight (an adapter or another layout)"
        parts.append(exact)
        row += blocks.rows
    joined = gguf_blocks.concatenated(parts)
    if joined is None:
        return None, "its parts have different bit widths"
    if lookup and joined.offsets is not None:
        return None, "GatherBlockQuantized has no per-block offset (a Q4_1 embedding)"
    return joined, ""


def _exact_variant(blocks: Blocks, weight: Any, heads: int | None) -> Blocks | None:
    """`blocks`, with rows permuted as transformers did for attn_q / attn_k, when they decode to `weight`."""
    import numpy as np

    variants = [gguf_blocks.permuted(blocks, heads), blocks] if heads else [blocks]
    limit = EXACT * max(float(np.abs(weight).max()), 1e-30)
    for variant in variants:
        decoded = variant.decode()
        if decoded.shape == weight.shape and float(np.abs(decoded - weight).max()) <= limit:
            return variant
    return None


class ReferenceWeights:
    """The float32 export's weights, by the name of the quantized node made from them, as [N, K]. Read lazily
    from the external data file (onnx refuses to load data files with several hard links, as cached ones are)."""

    def __init__(self, model_file: Path) -> None:
        import onnx

        self._folder = model_file.parent
        graph = onnx.load(str(model_file), load_external_data=False).graph
        arrays = {tensor.name: tensor for tensor in graph.initializer}
        self._tensors: dict[str, Any] = {}
        for node in graph.node:
            if node.op_type == "MatMul" and node.input[1] in arrays:
                self._tensors[node.name + "_Q4"] = arrays[node.input[1]]
            elif node.op_type == "Gather" and "input_ids" in node.input and node.input[0] in arrays:
                self._tensors["embedding"] = arrays[node.input[0]]

    def weight(self, node: Any) -> Any:
        """The float32 weight a quantized node (``<MatMul name>_Q4`` or ``_Q8``, or the embedding lookup) was
        made from, [N, K]; None if the export has none."""
        name = re.sub(r"_Q[48]$", "_Q4", node.name)
        tensor = self._tensors.get("embedding" if node.op_type == "GatherBlockQuantized" else name)
        if tensor is None:
            return None
        array = self._array(tensor)
        return array if node.op_type == "GatherBlockQuantized" else array.T

    def _array(self, tensor: Any) -> Any:
        import numpy as np
        from onnx import TensorProto, numpy_helper

        if tensor.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        where = {entry.key: entry.value for entry in tensor.external_data}
        count = int(np.prod(tensor.dims))
        data = np.fromfile(self._folder / where["location"], np.float32, count, offset=int(where.get("offset", 0)))
        return data.reshape(tuple(tensor.dims))
