"""Carried GGUF blocks stored in the GGUF's own bytes: fp16 scales and fp16 minimums, widened back to the exact
float32 values once, when onnxruntime loads the model.

A GGUF's Q4_1 and Q8_0 blocks hold their scale d and minimum m as fp16; the operators read float32 (MatMulNBits'
scales must have its input's type, and the offset term ``m + 8d`` is a float32 sum). Stored as float32 they are
twice the GGUF's bytes. Here each such initializer is stored as fp16 when that is exact, and a small constant
subgraph makes the float32 value: Cast for a scale; Cast(m) + 8 * d for an offset, which is the arithmetic
`gguf_blocks` uses, so the result is the same float32 bits. onnxruntime folds constant subgraphs when it loads a
session, so what a decode step reads (and its speed) is unchanged; the package is smaller by half of those bytes.
A value that fp16 does not hold exactly (a Q4_K minimum, a requantized scale) stays float32.
"""

from __future__ import annotations

from typing import Any

SCALE_INPUT = 2  # MatMulNBits' and GatherBlockQuantized's scales


EIGHT = "gguf_eight"
"""The float32 8 of ``m + 8d``, one initializer shared by every offset term."""


def narrow_scales(graph: Any) -> None:
    """Store every block-quantized operator's float32 scales that fp16 holds exactly as fp16 plus a Cast."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    casts, done = [], set()
    for node in graph.node:
        if node.op_type not in ("MatMulNBits", "GatherBlockQuantized") or len(node.input) <= SCALE_INPUT:
            continue
        name = node.input[SCALE_INPUT]
        tensor = initializers.get(name)
        if name in done or tensor is None or tensor.data_type != TensorProto.FLOAT:
            continue
        narrow = _exact_fp16(numpy_helper.to_array(tensor))
        if narrow is None:
            continue
        tensor.CopyFrom(numpy_helper.from_array(narrow.astype(np.float16), f"{name}_fp16"))
        casts.append(helper.make_node("Cast", [f"{name}_fp16"], [name], to=TensorProto.FLOAT, name=f"{name}/Widen"))
        done.add(name)
    _prepend(graph, casts)


def offsets_subgraph(graph: Any, prefix: str, offsets: Any, scales: tuple[str, Any]) -> list[Any]:
    """Make ``{prefix}/offsets`` (float32 [K/32, N], ``m + 8d``): from fp16 minimums and the operator's scales
    (`scales`: the initializer's name and its float32 [N, K/32] values) when exact, else as float32. Returns the
    nodes to run before the offset term."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    name, values = scales
    eight = np.float32(8)
    transposed = np.ascontiguousarray(values.T, dtype=np.float32)
    minimums = _exact_fp16(offsets - eight * transposed)
    if minimums is None or not np.array_equal(minimums.astype(np.float32) + eight * transposed, offsets):
        exact = np.ascontiguousarray(offsets, np.float32)
        graph.initializer.append(numpy_helper.from_array(exact, f"{prefix}/offsets"))
        return []
    graph.initializer.extend(
        [
            numpy_helper.from_array(minimums.astype(np.float16), f"{prefix}/minimums"),
            numpy_helper.from_array(np.array(list(values.shape), np.int64), f"{prefix}/scales_shape"),
        ]
    )
    if not any(tensor.name == EIGHT for tensor in graph.initializer):  # one constant for every offset term: a name
        graph.initializer.append(numpy_helper.from_array(eight, EIGHT))  # given twice is a warning at every load
    step = f"{prefix}/offsets_from"
    return [
        helper.make_node("Cast", [f"{prefix}/minimums"], [f"{step}/m"], to=TensorProto.FLOAT, name=f"{step}/Widen"),
        helper.make_node("Reshape", [name, f"{prefix}/scales_shape"], [f"{step}/d"], name=f"{step}/Rows"),
        helper.make_node("Transpose", [f"{step}/d"], [f"{step}/dT"], perm=[1, 0], name=f"{step}/Transpose"),
        helper.make_node("Mul", [f"{step}/dT", EIGHT], [f"{step}/8d"], name=f"{step}/Eight"),
        helper.make_node("Add", [f"{step}/m", f"{step}/8d"], [f"{prefix}/offsets"], name=f"{step}/Add"),
    ]


def _exact_fp16(values: Any) -> Any:
    """`values` as fp16 when every one is exactly an fp16 number (and finite), else None."""
    import numpy as np

    narrow = values.astype(np.float16)
    if not np.all(np.isfinite(narrow)) or not np.array_equal(narrow.astype(values.dtype), values):
        return None
    return narrow


def _prepend(graph: Any, nodes: list[Any]) -> None:
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *kept])
