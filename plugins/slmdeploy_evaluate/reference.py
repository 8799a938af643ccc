"""The source model's side of every comparison: a Hugging Face folder for it, made once per source and shared
by every variant and build (``StageContext.shared``)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from slmdeploy.plugin import Evaluator, StageContext, StageError
from slmdeploy.plugin.worker import run_in_worker

RUNTIMES = ("onnxruntime-genai", "torch", "transformers")


class MeasuringEvaluator(Evaluator):
    """An evaluator that runs the package and the source: alone (its speed figures are not shared with another
    step), and measured again when a runtime's version changes."""

    RUNS_ALONE = True
    CONTEXT_TABLES = ("runtime",)

    @property
    def threads(self) -> int:
        """The package's intra-op threads: ``[runtime] threads``, resolved for this machine by the core."""
        return int(self.context.tables["runtime"]["threads"])

    @classmethod
    def cache_version(cls) -> str:
        return f"{cls.CACHE_VERSION}:" + ":".join(importlib.metadata.version(name) for name in RUNTIMES)


def source_folder(context: StageContext) -> Path:
    """The source as a Hugging Face folder: the folder itself, or a dequantized or merged copy in the cache."""
    source = _source(context)
    if source.format == "hf" and source.adapter is None:
        return source.path
    task = {
        "path": str(source.path),
        "format": source.format,
        "adapter": str(source.adapter) if source.adapter else None,
        "trust_remote_code": source.trust_remote_code,
        "work": str(context.scratch / "source"),
    }

    def make(out: Path) -> None:
        context.log("preparing the source model for comparison")
        run_in_worker("slmdeploy_evaluate.measure:prepare_in_worker", {**task, "out": str(out)}, context, "source")

    return shared(context, "source-hf", {}, make)


def genai_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    return config


def context_tokens(folder: Path, deployed: bool = False) -> int:
    """The model's context length; `deployed`: the prompt-plus-answer limit the package is deployed with
    (``search.max_length``), which a runtime enforces."""
    config = genai_config(folder)
    limit = config["search"].get("max_length") if deployed else None
    return int(limit or config["model"]["context_length"])


def shared(context: StageContext, name: str, key: dict[str, Any], make: Any) -> Path:
    """A folder reused across variants and builds, keyed by the source's digest and `key`."""
    if context.shared is None:
        raise StageError(
            "this evaluator needs the build's shared cache", fix="Run it through `slmdeploy build`, not on its own."
        )
    return context.shared(f"slmdeploy_evaluate:{name}", {"source": context.source_digest, **key}, make)


def _source(context: StageContext) -> Any:
    if context.source is None:
        raise StageError(
            "this evaluator compares against the source model, and none was given",
            fix="Run it through `slmdeploy build`, with [source] in slmdeploy.toml.",
        )
    return context.source
