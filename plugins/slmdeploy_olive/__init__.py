"""slmdeploy's Olive plugin: ``[convert] plugin = "olive"`` and ``[quantize] plugin = "olive"``.

Convert exports the Hugging Face model (a folder, a GGUF file, optionally with a LoRA adapter merged in) to a
float32 ONNX Runtime GenAI folder with Olive's ModelBuilder pass; quantize makes int4, int8 or fp16 variants
from that one export with Olive's ONNX quantization passes. Heavy libraries load only when a stage runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slmdeploy.plugin import Candidate, ConfigError, DeployedModel, ProjectOptions, QuantizeSearch, hookimpl
from slmdeploy.plugin.files import model_config


@hookimpl
def slmdeploy_register_converters() -> list[type[Any]]:
    from slmdeploy_olive.convert import OliveConverter

    return [OliveConverter]


@hookimpl
def slmdeploy_register_quantizers() -> list[type[Any]]:
    from slmdeploy_olive.quantize import OliveQuantizer

    return [OliveQuantizer]


@hookimpl
def slmdeploy_quantize_candidates(
    quantizer: str, table: Mapping[str, Any], search: QuantizeSearch
) -> list[Candidate] | None:
    if quantizer != "olive":
        return None
    from slmdeploy_olive.candidates import candidates

    return candidates(table)


@hookimpl
def slmdeploy_check_project(options: ProjectOptions) -> None:
    """Before any work: the source's architecture must be one the plugin converts (read from its config.json;
    a GGUF file is checked after dequantizing, in the convert stage), and fp16 is for GPU execution providers."""
    convert, quantize = options.table("convert"), options.table("quantize")
    if convert is not None and convert.name == "olive":
        _check_architecture(options)
        _check_runtime_adapters(options)
    if convert is None or quantize is None or convert.name != "olive" or quantize.name != "olive":
        return
    from slmdeploy_olive.quantize import GPU_ONLY

    project = options.project
    device = convert.options.get("device", "cpu")
    precisions = quantize.options.get("precision", "int4")
    chosen = set(precisions if isinstance(precisions, list) else [precisions])
    if device == "cpu" and chosen & GPU_ONLY:
        raise ConfigError(
            'precision "fp16" is for GPU execution providers, but [convert] device is "cpu"',
            where=project.locate("quantize.precision"),
            fix='For the CPU choose "int4", "int8" or "fp32"; for fp16 set [convert] device to "cuda", "dml" or '
            '"webgpu" (built here, run on that device).',
        )


def _check_runtime_adapters(options: ProjectOptions) -> None:
    """``[convert] adapters = "runtime"``: every adapter must be plain LoRA on projections the builder splits out."""
    from slmdeploy_olive.adapter_check import MERGE_FIX, refusal

    for folder in options.sources[0].model.adapters:
        reason = refusal(folder)
        if reason is not None:
            raise ConfigError(
                f"the LoRA adapter {folder} cannot be applied at run time: {reason}",
                where=options.project.locate("source.adapter"),
                fix=MERGE_FIX,
            )


def _check_architecture(options: ProjectOptions) -> None:
    from slmdeploy_olive import architectures

    project, source = options.project, options.sources[0].model.path
    config = model_config(source) if source.is_dir() else {}
    if config.get("architectures"):
        key = "source.path" if project.source.path is not None else "source.package"
        architectures.check(config, str(source), located=project.locate(key))


@hookimpl(trylast=True)
def slmdeploy_chat_backend(model: DeployedModel, threads: int) -> Any:
    """Any CPU model folder runs directly in onnxruntime-genai when no registry's runtime answers."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime_genai") is None or not (model.folder / "genai_config.json").is_file():
        return None
    from slmdeploy_olive.chat import GenaiChat

    return GenaiChat(model.folder, threads, getattr(model, "adapter_file", None))
