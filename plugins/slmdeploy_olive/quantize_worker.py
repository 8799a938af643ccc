"""The quantize stage's work, run inside a worker process (`slmdeploy.plugin.worker.run_in_worker`): the Olive
passes chosen by `slmdeploy_olive.quantize` over the converted model, the GGUF's blocks carried where a GGUF source
has them, the all-logits twin, and the check that the result loads and generates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def quantize_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    from slmdeploy_olive.logits import write_all_logits_twin
    from slmdeploy_olive.verify import verify
    from slmdeploy_olive.workflow import copy_support_files

    source, out = Path(task["input"]), Path(task["out"])
    chain = _resolve_nodes(task, source)
    _keep_adapter_matmuls_float(task, chain, source)
    progress("olive: " + " -> ".join(spec["type"] for spec in chain.values()))
    out.mkdir()
    if task.get("kquant_embeddings"):
        _run_kquant_with_embeddings(task, source, chain, out, progress)
    elif task.get("weight_only"):
        _run_weight_only(task, source, chain, out, progress)
    else:
        _run(task, source, chain, out)
    copy_support_files(source, out)
    carried = None
    if task.get("gguf"):
        from slmdeploy_olive.gguf_carry import carry_blocks

        progress("putting the GGUF's own blocks into the int4 graph")
        carried = carry_blocks(out, source, Path(task["gguf"]), progress)
    elif task["gguf_note"]:
        from slmdeploy_olive.gguf_carry import REPORT

        carried = {"carried": {}, "note": task["gguf_note"]}
        (out / REPORT).write_text(json.dumps(carried, indent=2) + "\n", "utf-8")
        progress(task["gguf_note"])
    if task.get("q4_1") and (carried is None or carried.get("requantized", True)):  # nothing left: the GGUF held all
        from slmdeploy_olive.q4_1 import requantize

        progress("Q4_1 blocks (a scale and a minimum per block) for the 4-bit MatMuls")
        requantize(out, source, progress, carried)
    elif task["keep_int8"]:
        _tie_head(out, source, progress)
    write_all_logits_twin(out)
    progress("verifying the quantized model")
    return {"verified": verify(out, runnable_here=task["device"] == "cpu")}


def _tie_head(folder: Path, source: Path, progress: Callable[[str], None]) -> None:
    """keep_int8's 8-bit head and embedding share one table where the source ties them (`gguf_graph.tie_head`)."""
    import onnx

    from slmdeploy_olive import gguf_graph
    from slmdeploy_olive.gguf_carry import ReferenceWeights

    model = onnx.load(str(folder / "model.onnx"))
    if gguf_graph.tie_head(model.graph, ReferenceWeights(source / "model.onnx")):
        gguf_graph.save(model, folder)
        progress("the lm_head reads the embedding's table (tied, one table)")


def _resolve_nodes(task: dict[str, Any], source: Path) -> dict[str, Any]:
    """The chain with the node lists that need the graph: keep_int8's nodes, and the embedding when it stays float."""
    from slmdeploy_olive.nodes import int8_nodes

    chain = task["passes"]
    quantize = chain.get("quantize", {})
    if task["keep_embeddings_float"] and "nodes_to_exclude" in quantize:
        quantize["nodes_to_exclude"] = [*(quantize["nodes_to_exclude"] or []), *_embeddings(source)]
    if "keep_int8" in chain:
        excluded = quantize.get("nodes_to_exclude") or []
        picked = [name for name in int8_nodes(source / "model.onnx", task["keep_int8"]) if name not in excluded]
        if picked:
            chain["keep_int8"]["nodes_to_include"] = picked
            _rename_logits_from(chain, 8 if _logits_node(source) in picked else 4)
        else:
            del chain["keep_int8"]
    return chain


def _keep_adapter_matmuls_float(task: dict[str, Any], chain: dict[str, Any], source: Path) -> None:
    """Runtime LoRA adapters: their MatMuls read graph inputs whose default (rank 0) is an initializer, which the
    quantizers would take for a weight; they stay float32 (the adapter files are float32)."""
    import onnx

    graph = onnx.load(str(source / "model.onnx"), load_external_data=False).graph
    inputs = {item.name for item in graph.input}
    lora = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in inputs]
    if not lora:
        return
    quantize = chain.get("quantize", {})
    if "nodes_to_exclude" in quantize:
        quantize["nodes_to_exclude"] = [*(quantize["nodes_to_exclude"] or []), *lora]
    if task.get("weight_only"):
        task["weight_only"]["exclude"] = [*task["weight_only"]["exclude"], *lora]


def _logits_node(folder: Path) -> str:
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return next((node.name for node in graph.node if "logits" in node.output), "")


def _rename_logits_from(chain: dict[str, Any], bits: int) -> None:
    """The pass that quantizes lm_head renames ``logits`` after its bits: rename that name back."""
    for surgery in chain.get("surgery", {}).get("surgeries", []):
        if surgery["surgeon"] == "RenameOutputs":
            surgery["old_names"] = [f"logits_Q{bits}"]


def _run(task: dict[str, Any], source: Path, chain: dict[str, Any], out: Path) -> None:
    from slmdeploy_olive.workflow import run_workflow

    model = {"type": "ONNXModel", "model_path": str(source), "onnx_file_name": "model.onnx"}
    run_workflow(model, chain, task["device"], Path(task["scratch"]), out)


def _run_kquant_with_embeddings(
    task: dict[str, Any], source: Path, chain: dict[str, Any], out: Path, progress: Callable[[str], None]
) -> None:
    """Olive's k-quant pass quantizes MatMuls only: quantize the embedding table with the same k-quant blocks
    between the quantization and the surgery, so that a tied table is shared with lm_head as rtn's is."""
    from slmdeploy_olive.kquant_embeddings import quantize_embeddings

    halfway = Path(task["scratch"]) / "kquant"
    halfway.mkdir()
    surgery = {name: spec for name, spec in chain.items() if name == "surgery"}
    _run(task, source, {name: spec for name, spec in chain.items() if name != "surgery"}, halfway)
    progress("k-quant blocks for the embedding table")
    quantize_embeddings(halfway, task["passes"]["quantize"]["block_size"])
    model = {"type": "ONNXModel", "model_path": str(halfway), "onnx_file_name": "model.onnx"}
    from slmdeploy_olive.workflow import run_workflow

    run_workflow(model, surgery, task["device"], Path(task["scratch"]) / "surgery", out)


def _run_weight_only(
    task: dict[str, Any], source: Path, chain: dict[str, Any], out: Path, progress: Callable[[str], None]
) -> None:
    """gptq or hqq: keep_int8's pass (if any), then onnxruntime's quantizer on the MatMuls still float, then the
    round-to-nearest pass on what it leaves (the embedding table, a tied lm_head) and the surgery."""
    from slmdeploy_olive.weight_only import quantize_matmuls

    scratch, model = Path(task["scratch"]), source
    if "keep_int8" in chain:
        model = scratch / "int8"
        model.mkdir()
        _run(task, source, {"keep_int8": chain.pop("keep_int8")}, model)
    progress(f"{task['weight_only']['algorithm']}: onnxruntime's weight-only quantizer on the MatMuls")
    quantize_matmuls(task["weight_only"], model, source, scratch / "weight_only", progress)
    _run(task, scratch / "weight_only", chain, out)


def _embeddings(folder: Path) -> list[str]:
    """The Gather nodes that look up ``input_ids`` (the token embedding)."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "Gather" and "input_ids" in node.input]
