"""``[quantize] keep_float``: every name must be a MatMul or Gather node of the converted model, checked before the
Olive workflow runs (Olive ignores a name that matches nothing, and the node would be quantized silently). And
`drop_shapes`, for the graph edits that leave recorded shapes stale."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.plugin import ConfigError

QUANTIZABLE = ("MatMul", "Gather")
KEY = "[quantize] keep_float"


def drop_shapes(graph: Any, stale: Callable[[Any], bool]) -> None:
    """Remove the graph's recorded intermediate shapes (``value_info``) that `stale` picks: an edit leaves them
    describing values that changed, and onnxruntime would trust them."""
    kept = [info for info in graph.value_info if not stale(info)]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def quantizable_nodes(model_file: Path) -> list[str]:
    """The names of the graph's MatMul and Gather nodes (the graph only: external weights are not read)."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in QUANTIZABLE]


def check_keep_float(model_file: Path, names: Sequence[str]) -> None:
    """Raise a `ConfigError` naming [quantize] keep_float and the nearest node names when a name matches nothing."""
    if not names:
        return
    nodes = quantizable_nodes(model_file)
    known = set(nodes)
    for name in names:
        if name in known:
            continue
        nearest = difflib.get_close_matches(name, nodes, n=3, cutoff=0.5)
        hint = f"Nearest: {', '.join(nearest)}. " if nearest else ""
        raise ConfigError(
            f"keep_float names {name!r}, which is no MatMul or Gather node of the converted model",
            where=KEY,
            fix=f'{hint}All {len(nodes)} names: python -c "import onnx; print(*[n.name for n in '
            f"onnx.load('{model_file}', load_external_data=False).graph.node if n.op_type in "
            f"('MatMul', 'Gather')], sep='\\n')\"",
        )


INT8_GROUPS = ("lm_head", "embeddings", "first_layer", "last_layer")
_LAYER = re.compile(r"layers\.(\d+)/")


def int8_nodes(model_file: Path, groups: Sequence[str]) -> list[str]:
    """The MatMul and Gather nodes that ``[quantize] keep_int8`` names: node names, or the groups of `INT8_GROUPS`
    (the output head, the token embedding, every MatMul of the first or the last decoder layer)."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    nodes = [node for node in graph.node if node.op_type in QUANTIZABLE]
    layers = [int(found.group(1)) for node in nodes if (found := _LAYER.search(node.name))]
    edge = {"first_layer": min(layers, default=-1), "last_layer": max(layers, default=-1)}
    picked: list[str] = []
    for node in nodes:
        found = _LAYER.search(node.name)
        wanted = (
            node.name in groups
            or ("lm_head" in groups and node.op_type == "MatMul" and "logits" in node.output)
            or ("lm_head" in groups and node.name == "/lm_head/MatMul")
            or ("embeddings" in groups and node.op_type == "Gather" and "input_ids" in node.input)
            or (found and node.op_type == "MatMul" and any(int(found.group(1)) == edge[g] for g in edge if g in groups))
        )
        if wanted:
            picked.append(node.name)
    return picked
