"""Which Hugging Face architectures the Olive plugin converts, and why it refuses the others.

The onnxruntime-genai 0.18 model builder dispatches on ``config.architectures[0]`` (`supported` reads that list
from its source). Every architecture it names is either in `CONVERTS` (a tiny random model of it is converted,
quantized and run by ``tests/integration/test_architectures.py`` on every test run) or in `REFUSED` with the
reason and what to do; a test keeps the two lists covering the builder's, so a builder upgrade that adds an
architecture fails until it is classified. `check` runs when the build is planned (``slmdeploy plan`` reads the
source's ``config.json``) and again in the convert stage, after a GGUF file is dequantized.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

from slmdeploy.plugin import InputError

# Architecture -> the model_type of the tiny model the integration tests convert.
CONVERTS: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "PhiForCausalLM": "phi",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
    "GraniteForCausalLM": "granite",
    "OlmoForCausalLM": "olmo",
    "SmolLM3ForCausalLM": "smollm3",
    "Lfm2ForCausalLM": "lfm2",
    "Ernie4_5ForCausalLM": "ernie4_5",
    "NemotronForCausalLM": "nemotron",
    "HunYuanDenseV1ForCausalLM": "hunyuan_v1_dense",
    "GptOssForCausalLM": "gpt_oss",
    "Lfm2MoeForCausalLM": "lfm2_moe",
}

_MULTIMODAL = (
    "a vision or audio model: the builder exports only its text decoder, without the image or audio encoder the "
    "model's prompts need; slmdeploy deploys text-only models",
    "Deploy the text-only model of the family if there is one (Gemma 3 1B is Gemma3ForCausalLM), or convert the "
    "model with onnxruntime-genai's own tools for multimodal models.",
)
_REMOTE_CODE = (
    "a model whose code is not part of transformers (trust_remote_code), so slmdeploy cannot make a tiny one to "
    "test the conversion with, and does not run it",
    "Convert it with the builder by hand (python -m onnxruntime_genai.models.builder), or fine-tune an architecture "
    "docs/architectures.md lists as converting.",
)
_NOT_CPU = (
    "a mixture-of-experts model the builder exports for CUDA only (its MoE operator has no CPU kernel in "
    "onnxruntime 1.31)",
    'Set [convert] device = "cuda" with a converter plugin that supports it, or choose a dense model.',
)
_HYBRID_MAMBA = (
    "a hybrid Mamba and attention model, whose Mamba layers the builder does not export (a tiny one fails with "
    "\"'NoneType' object has no attribute 'q_proj'\")",
    "Fine-tune an architecture docs/architectures.md lists as converting (Granite 3 is GraniteForCausalLM).",
)
# Architecture -> (why it is refused, what to do).
REFUSED: dict[str, tuple[str, str]] = {
    "ChatGLMForConditionalGeneration": _REMOTE_CODE,
    "ChatGLMModel": _REMOTE_CODE,
    "InternLM2ForCausalLM": _REMOTE_CODE,
    "Phi3SmallForCausalLM": _REMOTE_CODE,
    "PhiMoEForCausalLM": _NOT_CPU,
    "GraniteMoeHybridForCausalLM": _HYBRID_MAMBA,
    "Gemma3ForConditionalGeneration": _MULTIMODAL,
    "Gemma4ForConditionalGeneration": _MULTIMODAL,
    "Gemma4UnifiedForConditionalGeneration": _MULTIMODAL,
    "Lfm2VlForConditionalGeneration": _MULTIMODAL,
    "Lfm2AudioForConditionalGeneration": _MULTIMODAL,
    "Mistral3ForConditionalGeneration": _MULTIMODAL,
    "Phi3VForCausalLM": _MULTIMODAL,
    "Phi4MMForCausalLM": _MULTIMODAL,
    "Qwen2_5_VLForConditionalGeneration": _MULTIMODAL,
    "Qwen3VLForConditionalGeneration": _MULTIMODAL,
    "Qwen3_5ForConditionalGeneration": _MULTIMODAL,
    "Qwen3_5MoeForConditionalGeneration": _MULTIMODAL,
    "VideoChatFlashQwenForCausalLM": _MULTIMODAL,
    "WhisperForConditionalGeneration": (
        "a speech recognition model (encoder-decoder), not a chat model",
        "Deploy it with onnxruntime-genai's Whisper tooling; slmdeploy builds chat models.",
    ),
}

_BIDIRECTIONAL = ("use_bidirectional_attention", False, "lets every token attend to later tokens (an embedding model)")
# Settings of a converting architecture that change what the model computes but that the 0.18 builder does not
# read (found by reading every config key against the builder's source; the docs' architecture table lists them):
# architecture -> (key, the value the builder's graph computes, what another value would do); an absent or null
# key is the default, which is what the builder computes.
UNREAD_SETTINGS: dict[str, tuple[tuple[str, Any, str], ...]] = {
    "OlmoForCausalLM": (("clip_qkv", None, "clamps the query, key and value projections to +-clip_qkv"),),
    "PhiForCausalLM": (("qk_layernorm", False, "normalizes queries and keys with a LayerNorm of their own"),),
    "GemmaForCausalLM": (_BIDIRECTIONAL,),
    "Gemma2ForCausalLM": (_BIDIRECTIONAL,),
    "Gemma3ForCausalLM": (_BIDIRECTIONAL,),
    "GptOssForCausalLM": (("swiglu_alpha", 1.702, "scales the gate inside the SwiGLU's sigmoid"),),
}


@functools.cache
def supported() -> tuple[str, ...]:
    """Read from the builder's own dispatch (``config.architectures[0] == "..."``), so it follows upgrades."""
    from onnxruntime_genai.models import builder

    source = inspect.getsource(builder.create_model)
    return tuple(sorted(set(re.findall(r'architectures\[0\] == "(\w+)"', source))))


def check(config: dict[str, Any], where: str, located: str | None = None) -> str:
    """The model's architecture, if slmdeploy converts it; otherwise an `InputError` saying why and what to do
    (`located`: the project file's line that names the model)."""
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture in CONVERTS:
        _check_settings(architecture, config, where, located)
        return architecture
    described = f"the model in {where} is a {architecture} (model_type {config.get('model_type', '?')!r})"
    if architecture in REFUSED:
        reason, fix = REFUSED[architecture]
        raise InputError(f"{described}, {reason}", where=located, fix=fix)
    raise InputError(
        f"{described}, which the ONNX Runtime GenAI {_builder_version()} model builder cannot export; slmdeploy "
        f"converts {', '.join(sorted(CONVERTS))}",
        where=located,
        fix="Convert it with a converter plugin that supports it (a slmdeploy_register_converters hook selected "
        'by [convert] plugin = "<name>"), or fine-tune a supported architecture.',
    )


def _check_settings(architecture: str, config: dict[str, Any], where: str, located: str | None) -> None:
    for key, computed, effect in UNREAD_SETTINGS.get(architecture, ()):
        value = config.get(key)
        if value is not None and value != computed:
            raise InputError(
                f"the model in {where} is a {architecture} with {key} = {value!r}, which {effect}; the ONNX Runtime "
                f"GenAI {_builder_version()} model builder ignores {key} (its graph computes {key} = {computed!r}), "
                "so the converted model would answer differently from the fine-tune",
                where=located,
                fix=f"Convert a model with {key} = {computed!r}, or a converter plugin that supports {key}.",
            )


def _builder_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("onnxruntime-genai")
    except importlib.metadata.PackageNotFoundError:
        return "0.18"
