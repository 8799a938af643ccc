"""`slmdeploy init`: a commented starter project file."""

from __future__ import annotations

import re
from pathlib import Path

import tomlkit

from slmdeploy.errors import ConfigError

STARTER = """\
# slmdeploy project file. `slmdeploy build` turns the model below into deployable variants.
# Every key is optional unless marked "required"; `slmdeploy plugins --options` lists each plugin's keys.

[project]
name = "my-model"          # required: build folders and the registered model id use it
version = 1                # bump to register a new version
description = ""

[source]
path = "models/my-model"   # a Hugging Face model folder or a .gguf file
# adapter = "adapters/my-lora"   # a PEFT LoRA adapter merged into the model first
# trust_remote_code = false      # never runs the model repository's own code unless true

[convert]
plugin = "olive"
device = "cpu"

[quantize]
plugin = "olive"
precision = ["int4", "int8"]   # a list builds one variant per value, sharing one conversion

[template]
family = "auto"            # picked from the model's config and chat template (`slmdeploy plan` shows which);
                           # or "qwen", "phi", "llama3", "llama2", "gemma", "chatml", "derived", a plugin's

[generation]
max_length = 2048
temperature = 0.7
top_p = 0.9
repetition_penalty = 1.0

# [runtime]
# threads = 0              # intra-op threads; 0: every core the process may use, read when the model is loaded
# prefill_chunk = 256      # a long prompt is read this many tokens per step; 0: in one step

# [evaluate]
# plugins = ["benchmark", "quality"]

# [register]
# plugin = "foundry"
"""


def write_starter(folder: Path, name: str | None = None) -> Path:
    """Write ``slmdeploy.toml`` into `folder`; never overwrites."""
    file = folder / "slmdeploy.toml"
    if file.exists():
        raise ConfigError(
            f"{file} already exists",
            where=str(file),
            fix="Edit it, or remove it first if you want a fresh starter file.",
        )
    document = tomlkit.parse(STARTER)
    document["project"]["name"] = _model_name(name or folder.resolve().name)  # type: ignore[index]
    folder.mkdir(parents=True, exist_ok=True)
    with file.open("x", encoding="utf-8") as out:
        out.write(tomlkit.dumps(document))
    return file


def _model_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "my-model"
    return name[:64]
