"""``[convert] plugin = "olive"``: a Hugging Face model to a float32 ONNX Runtime GenAI folder.

Olive's ModelBuilder pass (the onnxruntime-genai model builder) exports the float32 graph once; every
precision is then made from it by the quantize stage, so changing quantization never re-reads the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

from slmdeploy.plugin import Converter, OnnxModel, SourceModel, option
from slmdeploy.plugin.files import prepare_source
from slmdeploy.plugin.genai import ALL_LOGITS_GRAPH
from slmdeploy.plugin.worker import run_in_worker
from slmdeploy_olive.workflow import OLIVE_ENVIRONMENT, LibraryVersioned


@attrs.define
class ConvertOptions:
    device: Literal["cpu", "cuda", "dml", "webgpu"] = option(
        "cpu", help="the execution provider the model is built for; only cpu models are run during the build"
    )
    all_logits: bool = option(
        False,
        help="compute next-token logits at every prompt position, for tools that score a whole text in one pass; "
        "by default only the last position's (all that generation reads): a prompt's prefill then skips the "
        "lm_head for all but one token, and its logits buffer (vocabulary x prompt length x 4 bytes) is not made",
    )
    context_length: int = option(
        0,
        help="the most tokens (prompt and answer) the package holds, when fewer than the model's context: its rotary "
        "tables keep that many positions (SmolLM2's 8,192 positions are 2.1 MB at float32), and genai_config.json "
        "says so; 0: the model's own",
        validator=attrs.validators.ge(0),
    )


class OliveConverter(LibraryVersioned, Converter):
    PLUGIN_NAME = "olive"
    RUNTIME_ADAPTERS = True  # `slmdeploy_olive.adapter_files`

    Options = ConvertOptions

    def run(self, artifact: SourceModel, output_dir: Path) -> OnnxModel:
        task = {
            "source": str(artifact.path),
            "format": artifact.format,
            "adapter": str(artifact.adapter) if artifact.adapter else None,
            "adapters": [str(folder) for folder in artifact.adapters],
            "trust_remote_code": artifact.trust_remote_code,
            "device": self.options.device,
            "all_logits": self.options.all_logits,
            "context_length": self.options.context_length,
            "scratch": str(self.context.scratch),
            "out": str(output_dir / "model"),
        }
        run_in_worker("slmdeploy_olive.convert:convert_in_worker", task, self.context, "convert", OLIVE_ENVIRONMENT)
        return OnnxModel(output_dir / "model", precision="fp32", execution_provider=self.options.device)


def convert_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from slmdeploy_olive import architectures
    from slmdeploy_olive.context import limit_context
    from slmdeploy_olive.logits import write_all_logits_twin
    from slmdeploy_olive.verify import FIXES, verify
    from slmdeploy_olive.workflow import run_workflow

    # One torch thread: the builder computes the rotary cos/sin caches with torch, whose vectorized cos splits the
    # work by thread and rounds the chunk ends differently (up to 1.5e-4 apart at position 255), so an export made
    # where a worker gets both cores (a local build) and one made where it gets one (a Ray task) would differ.
    torch.set_num_threads(1)
    scratch, out = Path(task["scratch"]), Path(task["out"])
    adapter = Path(task["adapter"]) if task["adapter"] else None
    model = SourceModel(
        Path(task["source"]), format=task["format"], adapter=adapter, trust_remote_code=task["trust_remote_code"]
    )
    hf_folder = prepare_source(model, scratch, progress)
    config = json.loads((hf_folder / "config.json").read_text(encoding="utf-8"))
    architectures.check(config, task["source"])
    progress(f"exporting {config['architectures'][0]} to ONNX (float32, {task['device']})")
    passes = {
        "export": {
            "type": "ModelBuilder",
            "precision": "fp32",
            # A separate embedding table lets the quantize stage quantize it, then tie it to lm_head again.
            # Full-length KV caches on sliding-window layers (Gemma 2 and 3, Mistral): the window is still applied
            # by the attention, but a window-sized cache makes the runtime refuse any request whose max_length is
            # shorter than the window ("KV cache capacity (12) must be at least local_window_size (64)").
            # Last-position logits (prune_lm_head): the runtime reads only those ("trimmed prefill logits").
            "extra_options": {
                "shared_embeddings": False,
                "windowed_kv_cache": False,
                "prune_lm_head": not task.get("all_logits", False),
            },
        }
    }
    olive_model = {
        "type": "HfModel",
        "model_path": str(hf_folder),
        "load_kwargs": {"trust_remote_code": task["trust_remote_code"]},
    }
    runtime = [Path(folder) for folder in task.get("adapters", [])]
    pairs = _runtime_adapters(hf_folder, runtime, olive_model, passes, scratch, progress) if runtime else {}
    out.mkdir()
    run_workflow(
        olive_model,
        passes,
        task["device"],
        scratch,
        out,
        fix=f"The builder's traceback is in the stage log. {FIXES['convert']}",
    )
    for name in ("config.json", "generation_config.json"):
        if (hf_folder / name).is_file():
            shutil.copy2(hf_folder / name, out / name)
    if own := limit_context(out, task.get("context_length", 0)):
        progress(f"context: {task['context_length']} positions kept of the model's {own}")
    if runtime:
        from slmdeploy_olive.adapter_files import write_adapter_files

        index = write_adapter_files(out, pairs, runtime)
        progress("adapter files: " + ", ".join(f"{name} (rank {item['rank']})" for name, item in index.items()))
    if write_all_logits_twin(out):
        progress(f"the lm_head reads the last position only; {ALL_LOGITS_GRAPH} has every position's logits")
    progress("verifying the float32 export")
    return {"verified": verify(out, runnable_here=task["device"] == "cpu", stage="convert")}


def _runtime_adapters(
    hf_folder: Path,
    adapters: list[Path],
    olive_model: dict[str, Any],
    passes: dict[str, Any],
    scratch: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Prepare the export for runtime adapters: read each adapter's LoRA pairs, give the builder a union adapter
    (LoRA MatMuls of their own where any adapter has one), and make their weights graph inputs afterwards."""
    from slmdeploy_olive.adapter_files import EXTRACT_PASS, UNION_ADAPTER, lora_pairs, write_union_adapter

    progress(f"reading {len(adapters)} LoRA adapters for run time: {', '.join(folder.name for folder in adapters)}")
    pairs = lora_pairs(hf_folder, adapters)
    write_union_adapter(hf_folder, pairs, scratch / UNION_ADAPTER)
    olive_model["adapter_path"] = str(scratch / UNION_ADAPTER)
    passes["adapters"] = dict(EXTRACT_PASS)
    return pairs
