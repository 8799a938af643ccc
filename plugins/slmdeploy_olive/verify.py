"""Checking an ONNX Runtime GenAI model folder before it is cached: graph, config, and real tokens.

`onnx.checker` alone rejects every genai model: they use onnxruntime's contrib operators
(SimplifiedLayerNormalization, MatMulNBits, GroupQueryAttention ...), which onnx does not define. So each node
is checked by onnx's node checker when onnx defines its operator, and otherwise must be an operator
onnxruntime registers; the graph's inputs and outputs must be the ones ``genai_config.json`` names; and a
model built for this machine's CPU must load in onnxruntime-genai and generate tokens, with a context as
long as it will be run with: at least its sliding window (the runtime refuses a KV cache shorter than the
window) and up to 256 tokens. Runs in the worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmdeploy.plugin import StageError
from slmdeploy.plugin.genai import GenaiPackage

GENAI_REQUIRED = (
    "model.type",
    "model.context_length",
    "model.vocab_size",
    "model.eos_token_id",
    "model.decoder.filename",
    "model.decoder.num_hidden_layers",
    "model.decoder.head_size",
    "model.decoder.inputs",
    "model.decoder.outputs",
    "search.max_length",
)
PROBE_PROMPT = "The capital of France is"
PROBE_TOKENS = 4
PROBE_CONTEXT = 256  # tokens of KV cache the probe runs with, at least; more when the sliding window is longer
# What to try when a model fails its check, by the stage that made it: only options that stage has.
FIXES = {
    "convert": "No [convert] option changes the export (only `device`, the execution provider). Report it with the "
    "stage log (.slmdeploy/logs/) and the architecture; until then convert with another converter plugin "
    "([convert] plugin), or fine-tune an architecture docs/architectures.md lists as converting.",
    "quantize": "Choose another [quantize] precision, algorithm, block_size or accuracy_level (`slmdeploy plugins "
    "--options` lists them), or report it with the stage log (.slmdeploy/logs/).",
}


def verify(folder: Path, runnable_here: bool, stage: str = "quantize") -> dict[str, Any]:
    """Check `folder`, made by `stage` (``convert`` or ``quantize``: a failure names that stage's options); when
    `runnable_here`, load it in onnxruntime-genai and generate a few tokens."""
    config = genai_config(folder)
    check_graph(folder / str(config["model"]["decoder"]["filename"]), config, FIXES[stage])
    report: dict[str, Any] = {"graph": "checked", "genai_config": "complete"}
    if runnable_here:
        report["generation"] = probe(folder, probe_context(config), FIXES[stage])
    else:
        report["generation"] = "not run here: built for another execution provider"
    return report


def probe_context(config: dict[str, Any]) -> int:
    """The KV cache length to probe with: at least the sliding window, no more than the model's context."""
    window = int((config["model"]["decoder"].get("sliding_window") or {}).get("window_size") or 0)
    return min(max(PROBE_CONTEXT, window), int(config["model"]["context_length"]))


def genai_config(folder: Path) -> dict[str, Any]:
    file = folder / "genai_config.json"
    if not file.is_file():
        raise StageError(f"the export wrote no genai_config.json in {folder}", fix="See the worker log above.")
    config: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    missing = [key for key in GENAI_REQUIRED if _lookup(config, key) is None]
    if missing:
        raise StageError(f"genai_config.json lacks {', '.join(missing)}", fix="Report this with the builder version.")
    if not (folder / str(config["model"]["decoder"]["filename"])).is_file():
        raise StageError(
            f"genai_config.json names {config['model']['decoder']['filename']}, which is missing",
            fix="The export did not finish; build again.",
        )
    return config


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def check_graph(model_file: Path, config: dict[str, Any], fix: str = FIXES["quantize"]) -> None:
    import onnx
    import onnx.checker
    import onnx.defs
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    model = onnx.load(str(model_file), load_external_data=False)
    contrib = {(schema.domain or "", schema.name) for schema in ort_state.get_all_operator_schema()}
    context = onnx.checker.C.CheckerContext()
    context.ir_version = model.ir_version
    context.opset_imports = {opset.domain: opset.version for opset in model.opset_import}
    defined = {value.name for value in [*model.graph.input, *model.graph.initializer]} | {""}
    for node in model.graph.node:
        _check_node(node, context, contrib, defined, model_file, fix)
        defined.update(node.output)
    _check_io(model, config, model_file, fix)


def _check_node(
    node: Any, context: Any, contrib: set[tuple[str, str]], defined: set[str], model_file: Path, fix: str
) -> None:
    import onnx.checker
    import onnx.defs

    if node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type):
        try:
            onnx.checker.check_node(node, context)
        except onnx.checker.ValidationError as error:
            reason = f"node {node.name} ({node.op_type}): {str(error).splitlines()[0]}"
            raise _invalid(model_file, reason, fix) from None
    elif (node.domain if node.domain != "ai.onnx" else "", node.op_type) not in contrib:
        raise _invalid(
            model_file,
            f"node {node.name} uses {node.domain or 'ai.onnx'}.{node.op_type}, which neither "
            "onnx nor onnxruntime defines",
            fix,
        )
    undefined = [name for name in node.input if name not in defined]
    if undefined:
        reason = f"node {node.name} reads {', '.join(undefined)} before anything produces it"
        raise _invalid(model_file, reason, fix)


def _check_io(model: Any, config: dict[str, Any], model_file: Path, fix: str) -> None:
    decoder = config["model"]["decoder"]
    names = {value.name for value in [*model.graph.input, *model.graph.output]}
    for role, name in [*decoder["inputs"].items(), *decoder["outputs"].items()]:
        expected = [name % layer for layer in _layers_with(role, decoder)] if "%d" in name else [name]
        if role in ("attention_mask", "position_ids") and expected[0] not in names:
            continue  # optional inputs the builder may leave out
        missing = [item for item in expected if item not in names]
        if missing:
            raise _invalid(
                model_file,
                f"genai_config.json expects the graph's {role} to be {missing[0]!r}, which "
                f"the graph does not have (its outputs: {', '.join(o.name for o in model.graph.output[:3])})",
                fix,
            )


def _layers_with(role: str, decoder: dict[str, Any]) -> list[int]:
    """The layers that have the per-layer input or output `role`: in hybrid models (LFM2: ``layer_types`` of
    ``conv`` and ``full_attention``) only attention layers have a KV cache and only convolution layers a conv state."""
    types = decoder.get("layer_types") or ["attention"] * int(decoder["num_hidden_layers"])
    if "conv" in role:
        return [layer for layer, kind in enumerate(types) if kind == "conv"]
    if "key" in role or "value" in role:
        return [layer for layer, kind in enumerate(types) if kind.endswith("attention") and kind != "linear_attention"]
    return list(range(len(types)))


def _invalid(model_file: Path, what: str, fix: str) -> StageError:
    return StageError(f"{model_file.name} is not a valid model: {what}", fix=fix)


def probe(folder: Path, context: int = PROBE_CONTEXT, fix: str = FIXES["quantize"]) -> dict[str, Any]:
    """Load the model and greedily generate a few tokens, with a KV cache of `context` tokens."""
    try:
        package = GenaiPackage(folder, threads=1)
        tokens = package.encode(PROBE_PROMPT)
        length = max(context, len(tokens) + PROBE_TOKENS)
        generation = package.generate(tokens, PROBE_TOKENS, min_new_tokens=PROBE_TOKENS, max_length=length)
        produced = list(generation)
    except Exception as error:  # noqa: BLE001 - the runtime raises RuntimeError and others
        raise StageError(
            f"the model does not run in onnxruntime-genai: {str(error).strip().splitlines()[0]}", fix=fix
        ) from None
    if not produced:
        raise StageError("the model loaded but generated no tokens", fix="Report this with the options used.")
    return {"prompt": PROBE_PROMPT, "context": length, "tokens": produced, "text": package.decode(produced)}
