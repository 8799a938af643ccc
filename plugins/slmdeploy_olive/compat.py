"""Olive 0.13's ModelBuilder pass against the onnxruntime-genai 0.18 model builder: the compatibility layer.

Three mismatches, fixed in-process (site-packages are never edited), each checked by a test:

1. `ModelBuilder.maybe_patch_quant` imports ``onnxruntime_genai.models.quantized_model``, which 0.18 removed
   (0.18 reads Olive-quantized checkpoints natively in ``models/loaders/olive.py``). It would also replace the
   builder's ``make_embedding``, undoing 0.18's int4 embedding shared with a tied ``lm_head``. Made a no-op.
2. Olive calls ``create_model(**pass_options)`` directly, but 0.18's ``create_model`` expects the dict that
   ``parse_extra_options`` makes ("Hugging Face details not found in extra_options"). The wrapper makes it,
   exactly as the builder's own command line does.
3. Olive names options ``int4_block_size``, ``int4_is_symmetric`` ... which 0.18 documents as aliases but
   silently ignores. The wrapper passes them under their 0.18 names.

The wrapper also hands the builder a config adapted where transformers 5 and the builder disagree
(`slmdeploy_olive.configs`: Gemma 3's rotary settings, the norms' epsilon), and one builder class is corrected:

4. ``OLMoModel`` keeps the base class's ``layernorm_attrs["simple"] = True``, so OLMo's LayerNorm (mean
   subtracted, no weight or bias) would be exported as an RMSNorm (``SimplifiedLayerNormalization``). Its
   ``__init__`` is wrapped to ask for LayerNorm, as the builder's Phi and Nemotron classes do; the builder already
   gives it weight ones and bias zeros.
"""

from __future__ import annotations

import enum
from typing import Any

LIST_SEPARATORS = {"op_types_to_quantize": "/", "nodes_to_exclude": ","}
INT4_ALIASES = {
    "block_size",
    "accuracy_level",
    "is_symmetric",
    "algo_config",
    "op_types_to_quantize",
    "nodes_to_exclude",
}


def builder_arguments(options: dict[str, Any]) -> list[str]:
    """Olive's typed pass options as the builder's ``KEY=VALUE`` extra options."""
    arguments: dict[str, str] = {}
    for key, value in options.items():
        name = key.removeprefix("int4_") if key.removeprefix("int4_") in INT4_ALIASES else key
        if name != key and name in options:
            continue  # the 0.18 name, given explicitly, wins over Olive's alias
        arguments[name] = f"{name}={_text(name, value)}"
    return list(arguments.values())


def _text(name: str, value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return LIST_SEPARATORS.get(name, ",").join(str(item) for item in value)
    return str(value)


def apply() -> None:
    """Patch Olive's ModelBuilder pass and the builder's ``create_model`` for each other. Idempotent."""
    from olive.passes.onnx.model_builder import ModelBuilder
    from onnxruntime_genai.models import builder

    from slmdeploy_olive import configs

    ModelBuilder.maybe_patch_quant = staticmethod(lambda: None)  # type: ignore[method-assign]
    _olmo_layernorm(builder.OLMoModel)
    if getattr(builder.create_model, "slmdeploy_compat", False):
        return
    original = builder.create_model

    def create_model(
        model_name: str,
        input_path: str,
        output_dir: str,
        precision: Any,
        execution_provider: str,
        cache_dir: str,
        **extra_options: Any,
    ) -> Any:
        precision = getattr(precision, "value", precision)  # Olive passes its Precision enum
        if "hf_details" not in extra_options:
            extra_options = builder.parse_extra_options(
                model_name,
                input_path,
                output_dir,
                precision,
                execution_provider,
                cache_dir,
                builder_arguments(extra_options),
            )
        for change in configs.adapt_for_builder(extra_options["hf_details"]["hf_config"]):
            print(f"config adapted for the builder: {change}", flush=True)
        return original(model_name, input_path, output_dir, precision, execution_provider, cache_dir, **extra_options)

    create_model.slmdeploy_compat = True  # type: ignore[attr-defined]
    # Olive imports create_model inside the pass's run, so replacing the module attribute is enough.
    builder.create_model = create_model


def _olmo_layernorm(OLMoModel: Any) -> None:
    """`OLMoModel` as the builder module names it: the builder imports its classes from a top-level ``builders``
    package (its own folder on sys.path), not from ``onnxruntime_genai.models.builders``."""
    if getattr(OLMoModel.__init__, "slmdeploy_compat", False):
        return
    original = OLMoModel.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.layernorm_attrs["simple"] = False  # OlmoLayerNorm subtracts the mean: LayerNormalization

    __init__.slmdeploy_compat = True  # type: ignore[attr-defined]
    OLMoModel.__init__ = __init__  # type: ignore[method-assign]
