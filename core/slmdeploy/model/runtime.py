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


def session_options(threads: int | None) -> dict[str, Any]:
    """The decoder's session options for `threads` (0 or None: every available core).

    Only the intra-op pool matters for a decoder graph (one node runs at a time); the inter-op pool is kept at one
    thread so it does not compete with it."""
    return {"intra_op_num_threads": resolve_threads(threads), "inter_op_num_threads": 1}


def load_genai_model(folder: Path, threads: int | None = None, overlay: dict[str, Any] | None = None) -> Any:
    """An ``onnxruntime_genai.Model`` of the package in `folder`, with `threads` intra-op threads (None or 0: every
    core this process may use now, whatever the package's file says); `overlay`: more ``genai_config.json``
    settings for this load (the server's ``engine`` table)."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session_options(threads)}}}))
    if overlay:
        config.overlay(json.dumps(overlay))
    return og.Model(config)
