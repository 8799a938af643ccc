"""What a project has deployed, read from ``build/<variant>/manifest.json``: for ``slmdeploy ls`` and ``run``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.deployed import DeployedModel
from slmdeploy.errors import ConfigError, brief
from slmdeploy.execute.publish import REPORT


def deployed_models(build_dir: Path) -> list[DeployedModel]:
    return sorted(_read(build_dir), key=lambda model: model.name)


def _read(build_dir: Path) -> Iterator[DeployedModel]:
    for manifest_file in sorted(build_dir.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            if "base" in manifest:
                continue  # a runtime adapter's variant: listed with its base, whose manifest names it
            base = _deployed(manifest_file, manifest)
            yield base
            yield from (_adapter_variant(base, item, build_dir) for item in manifest.get("adapters", []))
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"the build manifest is damaged ({brief(error)})",
                where=str(manifest_file),
                fix="Run `slmdeploy build` to write it again.",
            ) from None


def _deployed(manifest_file: Path, manifest: dict[str, Any]) -> DeployedModel:
    stages = {stage["stage"]: stage for stage in manifest["stages"]}
    model: dict[str, Any] = next(
        (stage["artifact"] for stage in reversed(manifest["stages"]) if "precision" in stage["artifact"]), {}
    )
    registration = stages.get("register", {}).get("artifact")
    return DeployedModel(
        name=model.get("model_name") or f"{manifest['project']}-{manifest['variant']}",
        variant=manifest["variant"],
        version=int(manifest["version"]),
        precision=str(model.get("precision", "")),
        folder=manifest_file.parent / "model",
        built_at=manifest["built_at"],
        registration=registration,
        gates=_gates(manifest_file.parent / REPORT),
    )


def _adapter_variant(base: DeployedModel, item: dict[str, Any], build_dir: Path) -> DeployedModel:
    """A runtime LoRA adapter's variant: the base's files, the adapter applied, and its own evaluators' verdict
    (``build/<adapter>-<base>/report.json``; the base's when it was not evaluated on its own); never registered (a
    registry runs the base's folder, without adapters)."""
    variant = str(item["variant"])
    own = build_dir / variant / REPORT
    return attrs.evolve(
        base,
        name=f"{base.name}:{item['name']}",
        variant=variant,
        registration=None,
        gates=_gates(own) if own.is_file() else base.gates,
        adapter=str(item["name"]),
        base=base.variant,
    )


def _gates(report_file: Path) -> str | None:
    if not report_file.is_file():
        return None
    return str(json.loads(report_file.read_text(encoding="utf-8"))["status"])


def find(build_dir: Path, name: str) -> DeployedModel:
    models = deployed_models(build_dir)
    for model in models:
        if name in (model.name, model.variant):
            return model
    listing = ", ".join(model.name for model in models) or "none: run `slmdeploy build` first"
    raise ConfigError(f"no deployed model is named {name!r}", fix=f"Deployed models: {listing}.")
