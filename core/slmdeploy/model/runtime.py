"""How a package is run: the session options written into ``genai_config.json`` and applied when loading.

onnxruntime sizes its thread pool by *physical* cores when no thread count is given, which on a machine that
exposes two logical CPUs as one core's hyper-threads (common for VMs and laptops) means a single thread. So
every package carries an explicit thread count, and slmdeploy's own runners (evaluators, ``slmdeploy run``,
``slmdeploy serve``) set it again when they load a package, for the machine they run on.
onnxruntime-genai is imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmdeploy.machine import resolve_threads

AUTO = 0
"""``[runtime] threads = 0``: the cores this process may use, read when the model is loaded."""
ALL_LOGITS_GRAPH = "model.all_logits.onnx"
"""Beside a decoder graph that computes only the last position's logits (what generation reads, and a prompt's
prefill then skips the lm_head for the rest): the same graph with every position's logits, on the same weights
file, for readers of every position's logits (onnxruntime-genai's batching Engine, which pads prompts of different
lengths and reads each one's last real position; ``slmdeploy serve``'s own engine reads each prompt in runs of its
own and does not need it)."""


def session_options(threads: int | None) -> dict[str, Any]:
    """The decoder's session options for `threads` (0 or None: every available core).

    Only the intra-op pool matters for a decoder graph (one node runs at a time); the inter-op pool is kept at one
    thread so it does not compete with it. onnxruntime's memory pattern (buffers planned from the first run of each
    input shape) is off: on the demo's int4 it raised the peak resident memory of a 1,024-token prompt by 85 MB
    (455 against 370) and made neither the prefill nor the decode faster (measured 2026-11-30, 2 threads)."""
    return {
        "intra_op_num_threads": resolve_threads(threads),
        "inter_op_num_threads": 1,
        "enable_mem_pattern": False,
    }


def load_genai_model(
    folder: Path, threads: int | None = None, overlay: dict[str, Any] | None = None, all_logits: bool = False
) -> Any:
    """An ``onnxruntime_genai.Model`` of the package in `folder`, with `threads` intra-op threads (None or 0: every
    core this process may use now, whatever the package's file says); `overlay`: more ``genai_config.json``
    settings for this load (the server's ``engine`` table); `all_logits`: the graph with every position's logits
    when the package has one (`ALL_LOGITS_GRAPH`)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    decoder: dict[str, Any] = {"session_options": session_options(threads)}
    if all_logits and (folder / ALL_LOGITS_GRAPH).is_file():
        decoder["filename"] = ALL_LOGITS_GRAPH
    config.overlay(json.dumps({"model": {"decoder": decoder}}))
    if overlay:
        config.overlay(json.dumps(overlay))
    return og.Model(config)


def last_position_logits_only(folder: Path) -> bool:
    """Whether the package's decoder graph computes the logits of the last position only (its ``logits`` output's
    second dimension is 1), read from the graph's outputs without loading the weights."""
    import onnx

    config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    decoder = config["model"]["decoder"]
    graph = onnx.load(str(folder / decoder.get("filename", "model.onnx")), load_external_data=False).graph
    name = decoder.get("outputs", {}).get("logits", "logits")
    for output in graph.output:
        if output.name == name:
            dims = output.type.tensor_type.shape.dim
            return len(dims) == 3 and dims[1].HasField("dim_value") and dims[1].dim_value == 1
    return False
