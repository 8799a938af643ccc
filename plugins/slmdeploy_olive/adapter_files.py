"""Runtime LoRA adapters (``[convert] adapters = "runtime"``), in the convert worker: one base graph whose LoRA
MatMuls take their weights as inputs, and one ``.onnx_adapter`` file of those inputs per adapter.

The graph is the model builder's with a *union* adapter (rank 1, every projection any adapter targets), through
Olive's ``ExtractAdapters`` pass: each LoRA weight becomes a graph input whose rank dimension is dynamic
(``lora_r``), with an empty default (rank 0), so the base alone runs when no adapter is given and adapters of any
rank share the graph. Each adapter's file is then written here rather than by another builder run or by
``olive convert-adapters``, which names tensors after PEFT's modules instead of the graph's inputs (Olive#2277):
PEFT reads the adapter (its ranks, alpha and rank patterns, rsLoRA's scaling), and each LoRA pair goes to the
inputs of its layer and projection, as the builder lays them out: ``A^T`` ``[in, r]`` and ``(scaling * B)^T``
``[r, out]``, float32 (never quantized: the quantize stage quantizes initializers, and these are inputs).
Where the builder unfused q, k and v for the adapter, they are packed again first, with one LoRA pair for the three
(`slmdeploy_olive.adapter_graph`), and each adapter's q, k and v pairs are laid out for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slmdeploy.plugin import InputError
from slmdeploy.plugin.files import ADAPTERS_DIR, ADAPTERS_INDEX

PEFT_MODULE = re.compile(r"\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")
GRAPH_INPUT = re.compile(r"layers\.(\d+)\.\w+\.(\w+)\.lora_([AB])\.")
LORA_A_OUTPUT = re.compile(r"/layers\.(\d+)/\w+/(\w+)/lora_A/MatMul/output_0$")
"""The builder's ``x @ A`` output, whose last dimension it wrote as the union adapter's rank (1)."""
UNION_ADAPTER = "union-adapter"
EXTRACT_PASS = {
    "type": "ExtractAdapters",
    "make_inputs": True,
    "dynamic_lora_r": True,
    # an empty default for each LoRA input: onnxruntime-genai 0.18 feeds only the active adapter's, and nothing else
    "optional_inputs": True,
    "save_format": "onnx_adapter",
    "save_as_external_data": True,
    "all_tensors_to_one_file": True,
    "external_data_name": "model.onnx.data",
}
Pairs = dict[tuple[int, str], tuple[Any, Any]]
"""An adapter's LoRA: (layer, projection) to ``(A^T, (scaling * B)^T)`` as float32 numpy arrays."""


def lora_pairs(base: Path, adapters: Sequence[Path]) -> dict[str, Pairs]:
    """Each adapter's LoRA pairs, by adapter name (its folder's), read through PEFT on the base in `base`."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for index, folder in enumerate(adapters):
        try:
            if index == 0:
                model = PeftModel.from_pretrained(model, folder, adapter_name=folder.name)
            else:
                model.load_adapter(folder, adapter_name=folder.name)
        except (ValueError, RuntimeError, KeyError) as error:
            raise InputError(
                f"the LoRA adapter {folder} does not fit the base model {base}: {str(error).splitlines()[0]}",
                fix="Use the adapter with the base model it was trained on (see its adapter_config.json).",
            ) from None
    found: dict[str, Pairs] = {folder.name: {} for folder in adapters}
    for name, module in model.named_modules():
        where = PEFT_MODULE.search(name)
        if isinstance(module, LoraLayer) and where is not None:
            for adapter in module.lora_A:
                found[adapter][(int(where.group(1)), where.group(2))] = _pair(module, adapter)
    return found


def _pair(module: Any, adapter: str) -> tuple[Any, Any]:
    import torch

    with torch.no_grad():
        a = module.lora_A[adapter].weight.float().numpy().T.copy()
        b = (module.lora_B[adapter].weight.float() * module.scaling[adapter]).numpy().T.copy()
    return a, b


def write_union_adapter(base: Path, pairs: dict[str, Pairs], out: Path) -> None:
    """A rank-1 PEFT adapter on every projection some adapter targets: the builder lays out LoRA MatMuls for them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    targets = sorted({projection for found in pairs.values() for _, projection in found})
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=targets)).save_pretrained(out)


def write_adapter_files(folder: Path, pairs: dict[str, Pairs], sources: Sequence[Path]) -> dict[str, Any]:
    """Write ``adapters/<name>.onnx_adapter`` for each adapter and `ADAPTERS_INDEX` into the model folder `folder`
    (whose graph the union adapter made); drop the union's own weights file. Returns the index."""
    import onnx

    from slmdeploy_olive.adapter_graph import grouped, pack_qkv
    from slmdeploy_olive.gguf_graph import save

    graph = onnx.load(str(folder / "model.onnx"))  # with its weights: q, k and v are packed again
    packed = pack_qkv(graph)
    inputs = _lora_inputs(graph)
    _rank_per_projection(graph, inputs)
    save(graph, folder)
    (folder / "adapter_weights.onnx_adapter").unlink(missing_ok=True)
    (folder / ADAPTERS_DIR).mkdir()
    index: dict[str, Any] = {}
    for source in sources:
        name = source.name
        file = f"{ADAPTERS_DIR}/{name}.onnx_adapter"
        _export(folder / file, _parameters(grouped(pairs[name], packed), inputs, name))
        ranks = sorted({a.shape[1] for a, _ in pairs[name].values()})
        targets = sorted({projection for _, projection in pairs[name]})
        index[name] = {"file": file, "rank": ranks[-1], "targets": targets, "source": str(source)}
    (folder / ADAPTERS_INDEX).write_text(json.dumps({"adapters": index}, indent=2) + "\n", encoding="utf-8")
    return index


def _lora_inputs(model: Any) -> dict[tuple[int, str, str], str]:
    """The graph's LoRA weight inputs, by (layer, projection, ``A`` or ``B``)."""
    found = {}
    for item in model.graph.input:
        if match := GRAPH_INPUT.search(item.name):
            found[(int(match.group(1)), match.group(2), match.group(3))] = item.name
    return found


def _rank_per_projection(model: Any, inputs: dict[tuple[int, str, str], str]) -> None:
    """ExtractAdapters names every rank dimension ``lora_r``, which onnxruntime takes as one size for all: an adapter
    on some projections (the others at their empty default) or of mixed ranks would not run. Each projection's
    pair gets a dimension of its own, ``lora_r.<layer>.<projection>``, and so does ``x @ A``, where the builder
    wrote the union adapter's rank."""
    by_name = {name: key for key, name in inputs.items()}
    for item in model.graph.input:
        if item.name in by_name:
            layer, projection, side = by_name[item.name]
            dims = item.type.tensor_type.shape.dim
            dims[1 if side == "A" else 0].dim_param = f"lora_r.{layer}.{projection}"
    for item in model.graph.value_info:
        if match := LORA_A_OUTPUT.search(item.name):
            item.type.tensor_type.shape.dim[-1].dim_param = f"lora_r.{match.group(1)}.{match.group(2)}"


def _parameters(pairs: Pairs, inputs: dict[tuple[int, str, str], str], name: str) -> dict[str, Any]:
    parameters = {}
    for (layer, projection), (a, b) in sorted(pairs.items()):
        for side, array in (("A", a), ("B", b)):
            if (layer, projection, side) not in inputs:
                raise InputError(
                    f"the adapter {name}'s LoRA on layer {layer} {projection} has no input in the built graph",
                    fix='Set [convert] adapters = "merge", and report this with the adapter_config.json.',
                )
            parameters[inputs[(layer, projection, side)]] = array
    return parameters


def _export(file: Path, parameters: dict[str, Any]) -> None:
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in parameters.items()})
    adapter.export_adapter(str(file))
