"""Running an Olive workflow in-process and collecting its output into a stage's folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from slmdeploy.plugin import StageError
from slmdeploy.plugin.files import ADAPTERS_DIR
from slmdeploy.plugin.genai import ALL_LOGITS_GRAPH

LIBRARIES = ("olive-ai", "onnxruntime-genai", "onnxruntime", "onnx", "torch", "transformers", "peft", "gguf")


def library_versions() -> str:
    """The versions of the libraries that make the models: a new one must not reuse old outputs."""
    import importlib.metadata

    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=none")
    return ",".join(found)


class LibraryVersioned:
    """Mixed into the Olive stages: cached outputs are reused only with the same library versions."""

    CACHE_VERSION: str

    @classmethod
    def cache_version(cls) -> str:
        return f"{cls.CACHE_VERSION};{library_versions()}"


# Olive queues a telemetry heartbeat before it reads this; the worker's fast exit keeps it from being sent.
OLIVE_ENVIRONMENT = {"OLIVE_DISABLE_TELEMETRY": "1"}
EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}
# Olive's bookkeeping beside the model; not part of a deployable folder.
OLIVE_FILES = {"footprint.json", "output_footprint.json", "run_history.txt", "model_config.json"}


QUANTIZE_FIX = (
    "The pass's traceback is in the stage log (.slmdeploy/logs/). Choose other [quantize] options (`slmdeploy "
    "plugins --options` lists them), or report it with that log."
)


def run_workflow(
    input_model: dict[str, Any], passes: dict[str, Any], device: str, scratch: Path, out: Path, fix: str = QUANTIZE_FIX
) -> None:
    """Run `passes` on `input_model` with Olive and move the resulting model folder's files into `out`; a failure
    says `fix`, which names the options of the stage that runs the passes."""
    from olive.workflows import run

    from slmdeploy_olive import compat

    compat.apply()
    olive_out = scratch / "olive-output"
    config = {
        "input_model": input_model,
        "systems": {
            "local": {
                "type": "LocalSystem",
                "accelerators": [
                    {
                        "device": "cpu" if device == "cpu" else "gpu",
                        "execution_providers": [EXECUTION_PROVIDERS[device]],
                    },
                ],
            }
        },
        "passes": passes,
        "host": "local",
        "target": "local",
        # Olive keeps a copy of every pass output in its cache; slmdeploy caches stage outputs itself.
        "cache_dir": str(scratch / "olive-cache"),
        "output_dir": str(olive_out),
        "log_severity_level": 1,  # into the worker's log
    }
    print("olive passes: " + " -> ".join(str(spec["type"]) for spec in passes.values()), flush=True)
    errors = _ErrorCollector()
    logging.getLogger("olive").addHandler(errors)
    try:
        run(config)
    except Exception as error:
        raise StageError(f"the Olive workflow failed: {error!r}", fix=fix) from error
    finally:
        logging.getLogger("olive").removeHandler(errors)
    _collect(olive_out, out, list(passes), errors.messages, fix)


class _ErrorCollector(logging.Handler):
    """Olive logs a failing pass and returns normally ("No output model produced"): keep what it logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        self.messages.append(f"{record.getMessage()} ({cause!r})" if cause else record.getMessage())


def _collect(olive_out: Path, out: Path, passes: list[str], errors: list[str], fix: str) -> None:
    model_dir = _model_folder(olive_out)
    if model_dir is None:
        reason = "; ".join(errors[-2:]) or "Olive logged no error"
        raise StageError(f"the Olive workflow ({', '.join(passes)}) produced no model: {reason}", fix=fix)
    for item in model_dir.iterdir():
        if item.name not in OLIVE_FILES:
            shutil.move(str(item), out / item.name)


def _model_folder(olive_out: Path) -> Path | None:
    found = sorted(olive_out.rglob("*.onnx"))
    return found[0].parent if found else None


def copy_support_files(source: Path, out: Path) -> None:
    """Copy what is not an ONNX graph (genai_config.json, tokenizer, chat template, config.json), and the runtime
    adapters' folder as it is (their weights stay float32: they are graph inputs, which no pass quantizes)."""
    for item in source.iterdir():
        graph = item.name.startswith("model.onnx") or item.name == ALL_LOGITS_GRAPH
        if item.is_file() and not graph and not (out / item.name).exists():
            shutil.copy2(item, out / item.name)
    if (source / ADAPTERS_DIR).is_dir() and not (out / ADAPTERS_DIR).exists():
        shutil.copytree(source / ADAPTERS_DIR, out / ADAPTERS_DIR)
