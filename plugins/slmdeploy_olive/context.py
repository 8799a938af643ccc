"""``[convert] context_length``: a package that holds fewer positions than the model was trained for.

The builder writes the rotary embedding's cos and sin tables for every position of the model's context
(``max_position_embeddings``: 8,192 rows for SmolLM2, 2.1 MB at float32), though a package whose ``max_length`` is
2,048 never reads past row 2,047. Trimming the tables to the positions asked for changes no value the package reads;
``genai_config.json`` then says the shorter context, so every runtime refuses a longer request instead of reading
past the tables.
"""

from __future__ import annotations

import json
from pathlib import Path

from slmdeploy.plugin import StageError

ROTARY_TABLES = ("cos_cache", "sin_cache")


def limit_context(folder: Path, positions: int) -> int | None:
    """Keep the first `positions` rows of the rotary tables of the export in `folder`; the model's own context length
    when it was longer (and the tables were trimmed), else None."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from slmdeploy_olive.gguf_graph import save

    config_file = folder / "genai_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    own = int(config["model"]["context_length"])
    if not positions or positions >= own:
        return None
    model = onnx.load(str(folder / "model.onnx"))
    tables = {item.name: item for item in model.graph.initializer if item.name.endswith(("cos_cache", "sin_cache"))}
    if sorted(tables) != sorted(ROTARY_TABLES) or any(tables[name].dims[0] != own for name in ROTARY_TABLES):
        raise StageError(
            f"[convert] context_length = {positions} cannot shorten this model's context: its rotary tables are "
            f"{', '.join(sorted(tables)) or 'missing'}, not one cos and one sin table of {own} positions",
            fix="Remove [convert] context_length; [generation] max_length still limits what the package is asked.",
        )
    for name in ROTARY_TABLES:
        kept = np.ascontiguousarray(numpy_helper.to_array(tables[name])[:positions])
        tables[name].CopyFrom(numpy_helper.from_array(kept, name))
    save(model, folder)
    config["model"]["context_length"] = positions
    search = config.setdefault("search", {})
    search["max_length"] = min(int(search.get("max_length") or positions), positions)
    config_file.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    return own
