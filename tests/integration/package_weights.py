"""Reading a built package's quantized weights back as float32: MatMulNBits and GatherBlockQuantized blocks decoded,
offset terms added, fp16 constants widened as onnxruntime folds them at load. For tests of what a quantizer stored."""

from __future__ import annotations

from pathlib import Path


def decoded_weights(model_file: Path) -> dict[str, object]:
    """Each quantized weight as [N, K] float32, offset terms added, by node name (without /MatMul_Q4)."""
    import numpy as np
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    arrays = {tensor.name: external_array(model_file.parent, tensor) for tensor in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    arrays.update(folded_constants(graph, arrays))
    consumers = {name: node for node in graph.node for name in node.input}
    found = {}
    for node in graph.node:
        if node.op_type == "GatherBlockQuantized":
            found["embedding"] = decode(arrays[node.input[0]], arrays[node.input[2]], attribute(node, "bits"))
        if node.op_type != "MatMulNBits":
            continue
        source = producers.get(node.input[1])
        packed = arrays[source.input[0] if source is not None else node.input[1]]
        weight = decode(packed, arrays[node.input[2]], attribute(node, "bits"), attribute(node, "N"))
        output, add = node.output[0], consumers.get(node.output[0])
        if add is not None and add.op_type == "Add":
            term = producers[add.input[1]]
            weight = weight + arrays[term.input[1]].T.repeat(32, axis=1)
            split = consumers.get(add.output[0])
            if split is not None and split.op_type == "Split":
                sizes = arrays[split.input[1]].cumsum()[:-1]
                for name, part in zip(split.output, np.split(weight, sizes), strict=True):
                    found[name.split("/MatMul")[0]] = part
                continue
            output = add.output[0]
        found[output.split("/MatMul")[0] if "MatMul" in output else "/lm_head"] = weight
    return found


def folded_constants(graph, arrays):
    """The values of nodes that read only initializers (fp16 scales and minimums widened to float32), computed by
    onnx's reference evaluator as onnxruntime folds them at load."""
    from onnx.reference import ReferenceEvaluator

    known, found = dict(arrays), {}
    for node in graph.node:
        if node.input and all(name in known for name in node.input):
            values = ReferenceEvaluator(node).run(None, {name: known[name] for name in node.input})
            for name, value in zip(node.output, values, strict=True):
                known[name] = found[name] = value
    return found


def decode(packed, scales, bits, rows=None):
    import numpy as np

    rows = rows or packed.shape[0]
    values = packed.reshape(rows, -1, 16 if bits == 4 else 32)
    if bits == 4:
        values = np.stack([values & 0x0F, values >> 4], axis=-1).reshape(rows, values.shape[1], 32)
    centred = values.astype(np.float32) - (8 if bits == 4 else 128)
    return (centred * scales.reshape(rows, -1, 1)).reshape(rows, -1)


def attribute(node, name):
    return next(item.i for item in node.attribute if item.name == name)


def external_array(folder: Path, tensor):
    """onnx refuses to load external data with several hard links, as the build folder's files have."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    where = {entry.key: entry.value for entry in tensor.external_data}
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    count = int(np.prod(tensor.dims))
    data = np.fromfile(folder / where["location"], dtype, count, offset=int(where.get("offset", 0)))
    return data.reshape(tuple(tensor.dims))
