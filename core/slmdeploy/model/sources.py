"""Turning ``[source]`` into a Hugging Face folder: checks, GGUF dequantization, LoRA merge.

Shared by the stages that read the source model: a converter exports it, an evaluator compares against it.
The heavy libraries (torch, transformers, peft) are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.artifacts import SourceModel, model_config
from slmdeploy.errors import InputError
from slmdeploy.gguf import check_gguf

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def prepare_source(source: SourceModel, work: Path, log: Callable[[str], None]) -> Path:
    """A checked Hugging Face folder for `source`: the folder itself, or a dequantized or merged copy in `work`."""
    if source.format == "gguf":
        check_gguf(source.path)
        log(f"dequantizing {source.path.name} to float32")
        folder = dequantize_gguf(source.path, work / "hf", source.trust_remote_code)
    else:
        check_hf_folder(source.path)
        folder = source.path
        if not source.trust_remote_code:
            warn_custom_code(folder, log)
    if source.adapter is not None:
        log(f"merging the LoRA adapter {source.adapter.name}")
        folder = merge_adapter(folder, source.adapter, work / "hf-merged", source.trust_remote_code)
    return folder


def warn_custom_code(folder: Path, log: Callable[[str], None]) -> None:
    """A model with its own code (``auto_map``) is built as the stock architecture unless trust_remote_code is set:
    say so, naming the classes that are not run."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    custom = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(custom, dict) or not custom:
        return
    classes = ", ".join(sorted({str(value if isinstance(value, str) else value[0]) for value in custom.values()}))
    stock = ", ".join(config.get("architectures") or [str(config.get("model_type"))])
    log(
        f"warning: config.json's auto_map names the model's own code ({classes}), which is not run: it is built as "
        f"the stock {stock}. Set [source] trust_remote_code = true to run that code."
    )


def check_hf_folder(folder: Path) -> None:
    """Fail early, with the fix, on what the builder would trip over later."""
    if not folder.is_dir():
        raise InputError(
            f"{folder} is not a folder", fix="[source] path must be a Hugging Face model folder or a .gguf file."
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder",
            fix="Point [source] path at the folder `save_pretrained` wrote (config.json, weights, tokenizer).",
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(
            f"{config_file} is not valid JSON: {error}", fix="Restore the file from the checkpoint."
        ) from None
    if not config.get("architectures") or not config.get("model_type"):
        raise InputError(
            f"{config_file} names no model architecture (`architectures` and `model_type`)",
            fix="Save the model with transformers' save_pretrained, which records both.",
        )
    check_weights(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer.model)",
            fix="Save the tokenizer beside the model: tokenizer.save_pretrained(folder).",
        )


def check_weights(folder: Path) -> None:
    weights = [path for pattern in WEIGHT_PATTERNS for path in sorted(folder.glob(pattern))]
    if not weights:
        raise InputError(
            f"{folder} has no weight files (*.safetensors or pytorch_model*.bin)",
            fix="Save the model with save_pretrained, or copy its weight files into the folder.",
        )
    for path in weights:
        if path.suffix == ".safetensors":
            check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors the header places."""
    size = path.stat().st_size
    try:
        with path.open("rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            if length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(stream.read(length))
        end = max((tensor["data_offsets"][1] for name, tensor in header.items() if name != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{path} is not a readable safetensors file ({error})",
            fix="The file is damaged or is not safetensors: copy it again from the checkpoint.",
        ) from None
    if 8 + length + end > size:
        raise InputError(
            f"{path} is truncated: its header places {8 + length + end:,} bytes but the file has {size:,}",
            fix="The download or copy was cut short: copy the weight file again.",
        )


def dequantize_gguf(path: Path, out: Path, trust_remote_code: bool) -> Path:
    """Load a GGUF file through transformers (dequantized to float32) and save it as a Hugging Face folder.

    transformers refuses to save a model it loaded from GGUF, so a fresh model is built from its config
    (without the GGUF quantization record) and given the loaded weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options: dict[str, Any] = {"gguf_file": path.name, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **options)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **options)
    except (ValueError, OSError, RuntimeError, KeyError, IndexError, EOFError, struct.error) as error:
        raise InputError(
            f"transformers could not load {path.name} as a GGUF model: {error}",
            fix="Check that the file is a complete GGUF of an architecture transformers supports.",
        ) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    _set_generation_stop(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _set_generation_stop(model: Any, tokenizer: Any) -> None:
    # GGUF records the chat end token as the tokenizer's eos; make generation_config.json agree with it.
    if tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def merge_adapter(base: Path, adapter: Path, out: Path, trust_remote_code: bool) -> Path:
    """Merge a PEFT LoRA adapter into its base model and save the result as a plain Hugging Face folder."""
    adapter_config = _adapter_config(adapter)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    _check_targets(model, adapter, adapter_config, base)
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as error:
        raise InputError(
            f"the LoRA adapter {adapter} does not fit the base model {base}: {_first_line(error)}",
            fix=f"Use the adapter with the base model it was trained on "
            f"({adapter_config.get('base_model_name_or_path') or 'see adapter_config.json'}).",
        ) from None
    merged.save_pretrained(out)
    tokenizer_source = adapter if any((adapter / name).is_file() for name in TOKENIZER_FILES) else base
    AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code).save_pretrained(out)
    return out


def _adapter_config(adapter: Path) -> dict[str, Any]:
    file = adapter / "adapter_config.json"
    if not file.is_file():
        raise InputError(
            f"{adapter} has no adapter_config.json, so it is not a PEFT adapter folder",
            fix="Point [source] adapter at the folder PeftModel.save_pretrained wrote.",
        )
    config: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise InputError(
            f"{adapter} holds a {config.get('peft_type')} adapter; only LoRA adapters can be merged",
            fix="Merge it yourself with PEFT and point [source] path at the merged model.",
        )
    return config


def _check_targets(model: Any, adapter: Path, config: dict[str, Any], base: Path) -> None:
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        return  # a regular expression: PEFT checks it while loading
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(targets) - names)
    if missing:
        model_type = model_config(base).get("model_type", "?")
        raise InputError(
            f"the LoRA adapter {adapter} targets modules {', '.join(missing)} that the base model "
            f"({model_type}) does not have: it was trained on another architecture",
            fix=f"Use the base model named in its adapter_config.json "
            f"({config.get('base_model_name_or_path') or 'not recorded'}).",
        )


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
