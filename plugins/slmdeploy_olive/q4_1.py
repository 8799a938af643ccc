"""``[quantize] algorithm = "q4_1"`` (the default for int4): llama.cpp's Q4_1 blocks made from the float weights,
in the form the int4 graph already carries a Q4_1 GGUF's blocks (`gguf_graph`).

Each block of weights along K (``block_size``: 32 by default, as in llama.cpp) gets a scale d and a minimum m,
both rounded to fp16 as a Q4_1 GGUF stores them, and 4-bit values q with w = d * q + m: llama.cpp's
``quantize_row_q4_1_ref`` (d = (max - min) / 15, m = min, q rounded to the nearest level), except that q is
rounded against the fp16 d and m that are stored, not the float32 ones, so that each weight is the level nearest
to it among those the block can hold. The minimum makes the grid follow each block's own range, where round to
nearest's symmetric grid (``rtn``) spans [-max|w|, max|w|] and an integer zero point (``symmetric = false``) can
only move it by whole steps. A source whose weights were already quantized with a minimum per block (a
dequantized Q4_1 or Q4_K checkpoint) gets its blocks back.

The RTN pass makes the graph (MatMulNBits per weight, names, the tied head's view of the embedding table); here
every 4-bit MatMulNBits gets its Q4_1 blocks and an offset term, and nodes that read one input share one
MatMulNBits (gate and up), as for a GGUF. The embedding table and a head tied to it are left as the RTN pass made
them (GatherBlockQuantized has no offset per block): at 8 bits by default (``keep_int8``), as llama.cpp keeps
them in its Q4_1 files, in one table when the source ties them. Runs in the quantize worker. numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy_olive.gguf_blocks import BLOCK, Blocks, pack_nibbles
from slmdeploy_olive.gguf_carry import REPORT


def q4_1_blocks(weight: Any, block: int = BLOCK) -> Blocks:
    """float32 [N, K] (K a multiple of `block`) as Q4_1 blocks: fp16 scales and minimums, 4-bit values."""
    import numpy as np

    rows = weight.shape[0]
    blocks = np.asarray(weight, dtype=np.float32).reshape(rows, -1, block)
    low, high = blocks.min(axis=-1), blocks.max(axis=-1)
    minimums = low.astype(np.float16).astype(np.float32)
    scales = ((high - low) / np.float32(15)).astype(np.float16).astype(np.float32)
    inverse = np.divide(np.float32(1), scales, out=np.zeros_like(scales), where=scales > 0)
    levels = np.rint((blocks - minimums[..., None]) * inverse[..., None])
    packed = pack_nibbles(np.clip(levels, 0, 15).astype(np.uint8))
    return Blocks(4, packed, scales, minimums + np.float32(8) * scales)


def requantize(
    folder: Path, export: Path, progress: Callable[[str], None], carried: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Give every 4-bit MatMulNBits of the int4 model in `folder` Q4_1 blocks of the float32 `export`'s weight;
    write `quantization.json` and return its content. `carried`: the report written before, of a GGUF source's
    blocks kept in it (`gguf_carry`: then only the nodes it requantized get Q4_1 blocks) or of why none were; it is
    kept in this one."""
    import onnx

    from slmdeploy_olive import gguf_graph
    from slmdeploy_olive.gguf_carry import ReferenceWeights

    model = onnx.load(str(folder / "model.onnx"))
    reference = ReferenceWeights(export / "model.onnx")
    producers = {output: node for node in model.graph.node for output in node.output}
    chosen: dict[str, Blocks] = {}
    kept: dict[str, str] = {}
    for node in gguf_graph.quantized_nodes(model.graph):
        reason = _why_kept(node, producers)
        if carried is not None and "requantized" in carried and node.name not in carried["requantized"]:
            reason = reason or "the GGUF's own blocks"
        weight = None if reason else reference.weight(node)
        block = gguf_graph.attribute(node, "block_size")
        if weight is None or weight.shape[1] % block:
            kept[node.name] = reason or f"no float32 weight with K a multiple of {block} in the export"
            continue
        chosen[node.name] = q4_1_blocks(weight, block)
    gguf_graph.apply(model, chosen)
    if gguf_graph.tie_head(model.graph, reference) or chosen:
        gguf_graph.save(model, folder)
    tied = not gguf_graph.untied_head(model.graph)
    report = {**(carried or {}), "algorithm": "q4_1", "q4_1": sorted(chosen), "kept": kept, "head_tied": tied}
    (folder / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    progress(f"Q4_1 blocks in {len(chosen)} MatMulNBits; {len(kept)} nodes kept as the RTN pass made them")
    return report


def _why_kept(node: Any, producers: dict[str, Any]) -> str:
    """Why a quantized node keeps the RTN pass's blocks, or "" when it gets Q4_1's."""
    from slmdeploy_olive import gguf_graph

    if node.op_type != "MatMulNBits":
        return "the embedding lookup (GatherBlockQuantized has no offset per block)"
    bits = gguf_graph.attribute(node, "bits")
    if bits != 4:
        return f"{bits}-bit (keep_int8)"
    if len(node.input) > 3 and node.input[3]:
        return "it has zero points"
    if gguf_graph.tied_table(node, producers) is not None:
        return "the head tied to the embedding table reads that table"
    return ""
