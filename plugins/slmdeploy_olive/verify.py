"""Checking an ONNX Runtime GenAI model folder before it is cached: graph, config, and real tokens.

`onnx.checker` alone rejects every genai model: they use onnxruntime's contrib operators
(SimplifiedLayerNormalization, MatMulNBits, GroupQueryAttention ...), which onnx does not define. So each node
is checked by onnx's node checker when onnx defines its operator, and otherwise must be an operator
onnxruntime registers; the graph's inputs and outputs must be the ones ``genai_config.json`` names; and a
model built for this machine's CPU must load in onnxruntime-genai and generate tokens. Runs in the worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmdeploy.plugin import StageError

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


def verify(folder: Path, runnable_here: bool) -> dict[str, Any]:
    """Check `folder`; when `runnable_here`, load it in onnxruntime-genai and generate a few tokens."""
    config = genai_config(folder)
    check_graph(folder / str(config["model"]["decoder"]["filename"]), config)
    report: dict[str, Any] = {"graph": "checked", "genai_config": "complete"}
    report["generation"] = probe(folder) if runnable_here else "not run here: built for another execution provider"
    return report


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


def check_graph(model_file: Path, config: dict[str, Any]) -> None:
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
        _check_node(node, context, contrib, defined, model_file)
        defined.update(node.output)
    _check_io(model, config, model_file)


def _check_node(node: Any, context: Any, contrib: set[tuple[str, str]], defined: set[str], model_file: Path) -> None:
    import onnx.checker
    import onnx.defs

    if node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type):
        try:
            onnx.checker.check_node(node, context)
        except onnx.checker.ValidationError as error:
            raise _invalid(model_file, f"node {node.name} ({node.op_type}): {str(error).splitlines()[0]}") from None
    elif (node.domain if node.domain != "ai.onnx" else "", node.op_type) not in contrib:
        raise _invalid(
            model_file,
            f"node {node.name} uses {node.domain or 'ai.onnx'}.{node.op_type}, which neither "
            "onnx nor onnxruntime defines",
        )
    undefined = [name for name in node.input if name not in defined]
    if undefined:
        raise _invalid(model_file, f"node {node.name} reads {', '.join(undefined)} before anything produces it")


def _check_io(model: Any, config: dict[str, Any], model_file: Path) -> None:
    decoder = config["model"]["decoder"]
    names = {value.name for value in [*model.graph.input, *model.graph.output]}
    layers = int(decoder["num_hidden_layers"])
    for role, name in [*decoder["inputs"].items(), *decoder["outputs"].items()]:
        expected = [name % layer for layer in range(layers)] if "%d" in name else [name]
        if role in ("attention_mask", "position_ids") and expected[0] not in names:
            continue  # optional inputs the builder may leave out
        missing = [item for item in expected if item not in names]
        if missing:
            raise _invalid(
                model_file,
                f"genai_config.json expects the graph's {role} to be {missing[0]!r}, which "
                f"the graph does not have (its outputs: {', '.join(o.name for o in model.graph.output[:3])})",
            )


def _invalid(model_file: Path, what: str) -> StageError:
    return StageError(
        f"{model_file.name} is not a valid model: {what}",
        fix="These options produce a model onnxruntime cannot run; choose others or report it.",
    )


def probe(folder: Path) -> dict[str, Any]:
    """Load the model and greedily generate a few tokens."""
    import onnxruntime_genai as og

    try:
        model = og.Model(str(folder))
        tokenizer = og.Tokenizer(model)
        tokens = tokenizer.encode(PROBE_PROMPT)
        params = og.GeneratorParams(model)
        params.set_search_options(
            do_sample=False, max_length=len(tokens) + PROBE_TOKENS, min_length=len(tokens) + PROBE_TOKENS
        )
        generator = og.Generator(model, params)
        generator.append_tokens(tokens)
        produced = []
        while not generator.is_done():
            generator.generate_next_token()
            produced.append(int(generator.get_next_tokens()[0]))
    except Exception as error:  # noqa: BLE001 - the runtime raises RuntimeError and others
        raise StageError(
            f"the model does not run in onnxruntime-genai: {str(error).strip().splitlines()[0]}",
            fix="These options produce a model the runtime cannot load; choose others.",
        ) from None
    if not produced:
        raise StageError("the model loaded but generated no tokens", fix="Report this with the options used.")
    return {"prompt": PROBE_PROMPT, "tokens": produced, "text": tokenizer.decode(produced)}
