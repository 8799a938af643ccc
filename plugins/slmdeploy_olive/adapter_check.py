"""Which PEFT adapters can be applied at run time on the builder's graph (``[convert] adapters = "runtime"``).

The model builder keeps a LoRA on a projection of the attention or the MLP as two MatMuls of its own beside the
base's (``lora_A``, then ``lora_B`` times the LoRA scaling) and adds their output to the base's: that is plain LoRA.
An adapter that also changes anything else (DoRA's magnitude vectors, whole modules trained beside the LoRA, added
or retrained tokens, biases) or puts its LoRA on a module the builder does not split out cannot be such a file; it
can still be merged into a copy of the base. Read at plan time from ``adapter_config.json`` and the weights file's
header: no model is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

BUILDER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The projections the builder makes LoRA MatMuls for, each its own node (q, k and v are then not fused)."""
LORA_KEY = re.compile(r"\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
"""A LoRA matrix of a decoder layer's projection, as PEFT names it in ``adapter_model.safetensors``."""
ANY_LORA_KEY = re.compile(r"(?:^|\.)(\w+)\.lora_([AB])\.weight$")
"""A LoRA matrix of any module (``lm_head``, ``embed_tokens`` too)."""
WEIGHTS_FILE = "adapter_model.safetensors"
MERGE_FIX = (
    'Set [convert] adapters = "merge": each adapter is then merged into its own copy of the base before conversion, '
    "which takes any PEFT LoRA (DoRA, modules_to_save and added tokens too), at the cost of a whole model per adapter."
)


def refusal(folder: Path) -> str | None:
    """Why the adapter in `folder` cannot be applied at run time, or None when it is plain LoRA the builder takes."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return "it has no adapter_config.json, so it is not a PEFT adapter folder"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    reason = _config_refusal(config)
    if reason is None and (folder / WEIGHTS_FILE).is_file():
        reason = _weights_refusal(_tensor_names(folder / WEIGHTS_FILE))
    if reason is None and (folder / "added_tokens.json").is_file():
        reason = "it adds tokens to the vocabulary (added_tokens.json), which the base's embedding does not hold"
    return reason


def _config_refusal(config: dict[str, Any]) -> str | None:
    kind = config.get("peft_type")
    checks = [
        (kind != "LORA", f"it is a {kind} adapter, not LoRA"),
        (bool(config.get("use_dora")), "it is DoRA (use_dora): a magnitude vector rescales every adapted weight"),
        (
            bool(config.get("modules_to_save")),
            f"it trains whole modules beside the LoRA (modules_to_save: {config.get('modules_to_save')})",
        ),
        (bool(config.get("trainable_token_indices")), "it retrains token embeddings (trainable_token_indices)"),
        (config.get("bias", "none") != "none" or bool(config.get("lora_bias")), "it trains biases"),
        (bool(config.get("layer_replication")), "it replicates layers (layer_replication)"),
    ]
    return next((reason for refused, reason in checks if refused), None)


def _weights_refusal(names: list[str]) -> str | None:
    outside = {match.group(1) for name in names if not LORA_KEY.search(name) and (match := ANY_LORA_KEY.search(name))}
    targets = {match.group(2) for name in names if (match := LORA_KEY.search(name))}
    unsupported = sorted(outside | {target for target in targets if target not in BUILDER_TARGETS})
    if unsupported:
        return (
            f"it targets {', '.join(unsupported)}, which the model builder does not keep as LoRA MatMuls of their "
            f"own (it does for {', '.join(BUILDER_TARGETS)})"
        )
    other = [name for name in names if not ANY_LORA_KEY.search(name)]
    if other:
        return (
            f"its weights hold more than LoRA matrices ({other[0]}): added tokens, a resized embedding or a whole "
            "module trained beside the LoRA"
        )
    return None


def _tensor_names(file: Path) -> list[str]:
    """The tensor names of a safetensors file, from its header (8 bytes of length, then JSON)."""
    with file.open("rb") as stream:
        length = int.from_bytes(stream.read(8), "little")
        header: dict[str, Any] = json.loads(stream.read(length))
    return [name for name in header if name != "__metadata__"]
