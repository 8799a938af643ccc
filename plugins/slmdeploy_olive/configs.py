"""Hugging Face configs as the onnxruntime-genai 0.18 model builder reads them.

transformers 5 and the builder disagree on some configs; the builder is handed an adapted copy of the config
object it loaded (the model folder is not changed). Each adaptation names the architectures it is for:

- Gemma 3 (``Gemma3ForCausalLM``): transformers 5 keeps the rotary settings per layer type,
  ``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}``, and no ``rope_local_base_freq``.
  The 0.18 builder reads ``rope_parameters["rope_type"]`` (``KeyError: 'rope_type'``) and
  ``config.rope_local_base_freq``: the global layers' settings become ``rope_parameters`` and the sliding
  layers' theta ``rope_local_base_freq``, the form transformers 4 wrote. (Gemma 4's builder reads the nested
  form itself.)
"""

from __future__ import annotations

from typing import Any

NESTED_ROPE = ("Gemma3ForCausalLM",)


def adapt_for_builder(config: Any) -> list[str]:
    """Adapt `config` (a transformers config object) in place for the builder; return what was changed."""
    architecture = (getattr(config, "architectures", None) or [""])[0]
    changes = []
    if architecture in NESTED_ROPE and _nested_rope(getattr(config, "rope_parameters", None)):
        rope = config.rope_parameters
        config.rope_parameters = dict(rope["full_attention"])
        config.rope_local_base_freq = rope.get("sliding_attention", {}).get(
            "rope_theta", getattr(config, "rope_local_base_freq", 10_000.0)
        )
        changes.append(
            f"{architecture}: rope_parameters per layer type flattened to the full-attention layers' "
            f"({config.rope_parameters}), rope_local_base_freq = {config.rope_local_base_freq}"
        )
    return changes


def _nested_rope(rope: Any) -> bool:
    return isinstance(rope, dict) and "rope_type" not in rope and isinstance(rope.get("full_attention"), dict)
