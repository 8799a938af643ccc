"""Hugging Face configs as the onnxruntime-genai 0.18 model builder reads them.

transformers 5 and the builder disagree on some configs; the builder is handed an adapted copy of the config
object it loaded (the model folder is not changed). Each adaptation names the architectures it is for:

- Gemma 3 (``Gemma3ForCausalLM``): transformers 5 keeps the rotary settings per layer type,
  ``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}``, and no ``rope_local_base_freq``.
  The 0.18 builder reads ``rope_parameters["rope_type"]`` (``KeyError: 'rope_type'``) and
  ``config.rope_local_base_freq``: the global layers' settings become ``rope_parameters`` and the sliding
  layers' theta ``rope_local_base_freq``, the form transformers 4 wrote. (Gemma 4's builder reads the nested
  form itself.)
- Norm epsilon (every architecture): the builder's norms (and the Q/K norms inside GroupQueryAttention) take
  ``config.rms_norm_eps``, or 1e-6 when the config has no such key (``builders/base.py``). Phi-2 names it
  ``layer_norm_eps``, Nemotron and LFM2 ``norm_eps`` (1e-5 each), and OLMo's LayerNorm has a fixed 1e-5 in
  transformers' code and no key at all: their epsilon is given to the builder as ``rms_norm_eps``.

Whether each norm is a LayerNorm (mean subtracted) or an RMSNorm is the builder class's choice, not the
config's: OLMo's is corrected in `slmdeploy_olive.compat`.
"""

from __future__ import annotations

from typing import Any

NESTED_ROPE = ("Gemma3ForCausalLM",)
NORM_EPS_KEYS = ("layer_norm_eps", "norm_eps", "layer_norm_epsilon")
"""Other names configs give the norms' epsilon (Phi-2; Nemotron, LFM2; GPT-2 style), read where
``rms_norm_eps`` is absent."""
FIXED_NORM_EPS = {"OlmoForCausalLM": 1e-5}
"""Architectures whose norm epsilon is fixed in transformers' modeling code (``OlmoLayerNorm``), not configured."""


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
    eps, named = norm_eps(architecture, config)
    if getattr(config, "rms_norm_eps", None) is None and eps is not None:
        config.rms_norm_eps = eps
        changes.append(f"{architecture}: the norms' epsilon {eps} ({named}) given to the builder as rms_norm_eps")
    return changes


def norm_eps(architecture: str, config: Any) -> tuple[float | None, str]:
    """The epsilon the source model's norms use, and where it comes from; (None, "") if the config names none."""
    if architecture in FIXED_NORM_EPS:
        return FIXED_NORM_EPS[architecture], f"fixed in transformers' {architecture}"
    for key in ("rms_norm_eps", *NORM_EPS_KEYS):
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if value is not None:
            return float(value), f"config.{key}"
    return None, ""


def _nested_rope(rope: Any) -> bool:
    return isinstance(rope, dict) and "rope_type" not in rope and isinstance(rope.get("full_attention"), dict)
