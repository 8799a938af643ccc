"""Which Hugging Face architectures the installed ONNX Runtime GenAI model builder can export."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

from slmdeploy.plugin import InputError

# Architectures the plugin's tests convert on every run (tiny random models); the rest the builder claims.
TESTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM")


@functools.cache
def supported() -> tuple[str, ...]:
    """Read from the builder's own dispatch (``config.architectures[0] == "..."``), so it follows upgrades."""
    from onnxruntime_genai.models import builder

    source = inspect.getsource(builder.create_model)
    return tuple(sorted(set(re.findall(r'architectures\[0\] == "(\w+)"', source))))


def check(config: dict[str, Any], where: str) -> str:
    architecture = (config.get("architectures") or ["?"])[0]
    known = supported()
    if architecture not in known:
        raise InputError(
            f"the model in {where} is a {architecture} (model_type {config.get('model_type', '?')!r}), which the "
            f"ONNX Runtime GenAI model builder cannot export; it exports: {', '.join(known)}",
            fix="Convert it with a converter plugin that supports it (a slmdeploy_register_converters hook selected "
            'by [convert] plugin = "<name>"), or fine-tune a supported architecture.',
        )
    return architecture
