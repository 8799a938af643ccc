"""A model's files: reading what the project names, placing folders cheaply, the source as a Hugging Face folder.

- `model_config(folder)`: the folder's ``config.json`` as a dict (empty when there is none); `chat_template(folder)`:
  the tokenizer's jinja chat template (``chat_template.jinja`` or ``tokenizer_config.json``), or None.
- `read_text_file(file, key)`: a file the project names, as text, or a `ConfigError` naming the file and the
  project file's key (never its content).
- `link_tree(source, target)`: a folder's files as hard links where the file system allows, copies elsewhere.
  Linked files share their content with the cache: never edit one in place, replace it (unlink, then write).
- `runtime_adapters(folder)`: the runtime LoRA adapters a model folder's graph takes, by name, from its
  ``adapters.json`` (`ADAPTERS_INDEX`; the files in `ADAPTERS_DIR`), or an empty dict.
- `prepare_source(source, work, log)`: a `SourceModel` as a Hugging Face folder: itself, or a GGUF file dequantized
  and a LoRA adapter merged into a new folder under `work` (needs the ``olive`` extra's torch and transformers).
"""

from __future__ import annotations

from slmdeploy.artifacts import ADAPTERS_DIR, ADAPTERS_INDEX, chat_template, model_config, runtime_adapters
from slmdeploy.config.syntax import read_text_file
from slmdeploy.files import link_tree
from slmdeploy.model.sources import prepare_source

__all__ = [
    "ADAPTERS_DIR",
    "ADAPTERS_INDEX",
    "chat_template",
    "link_tree",
    "model_config",
    "prepare_source",
    "read_text_file",
    "runtime_adapters",
]
