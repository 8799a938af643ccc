"""``algorithm = "k_quant"`` with the token embedding quantized: Olive's k-quant pass quantizes MatMuls only, so the
embedding lookup becomes a GatherBlockQuantized here, with the same k-quant blocks the pass makes for a MatMul of
the transposed table. For a model whose lm_head is the embedding table (tied), both then hold equal blocks and
Olive's TieWordEmbeddings surgery, run next, shares one table between them as it does for round to nearest."""

from __future__ import annotations

from pathlib import Path

MODEL = "model.onnx"
DATA = "model.onnx.data"


def quantize_embeddings(folder: Path, block_size: int, bits: int = 4) -> bool:
    """Replace the float Gather that looks up ``input_ids`` in `folder`'s model; False when there is none."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(folder / MODEL))
    graph = model.graph
    tables = {init.name: init for init in graph.initializer}
    lookups = [node for node in graph.node if node.op_type == "Gather" and "input_ids" in node.input]
    node = next((node for node in lookups if node.input[0] in tables), None)
    if node is None:
        return False
    table = numpy_helper.to_array(tables[node.input[0]])
    data, scales, zero_points = _blocks(table, block_size, bits)
    names = [f"{node.input[0]}_Q{bits}", f"{node.input[0]}_scales", f"{node.input[0]}_zero_point"]
    graph.initializer.remove(tables[node.input[0]])
    arrays = zip((data, scales, zero_points), names, strict=True)
    graph.initializer.extend(numpy_helper.from_array(array, name) for array, name in arrays)
    quantized = helper.make_node(
        "GatherBlockQuantized",
        [names[0], node.input[1], names[1], names[2]],
        list(node.output),
        name=f"{node.name}_Q{bits}",
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=block_size,
        bits=bits,
    )
    position = list(graph.node).index(node)
    graph.node.remove(node)
    graph.node.insert(position, quantized)
    (folder / DATA).unlink(missing_ok=True)
    onnx.save(model, str(folder / MODEL), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA)
    return True


def _blocks(table, block_size: int, bits: int):  # type: ignore[no-untyped-def]
    """The k-quant blocks of a [vocabulary, hidden] table in GatherBlockQuantized's layout: the blocks Olive's
    k-quant pass makes for a MatMul whose weight is the transposed table, one row per token."""
    from olive.passes.onnx.kquant_quantization import OnnxKQuantQuantization

    rows = table.shape[0]
    packed, scales, zero_points = OnnxKQuantQuantization._kquant_block_quant(table.T, bits, block_size)
    return packed.reshape(rows, -1), scales.reshape(rows, -1), zero_points.reshape(rows, -1)
