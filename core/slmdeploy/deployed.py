"""What a project has deployed, read from ``build/<variant>/manifest.json``: for ``slmdeploy ls`` and ``run``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from slmdeploy.errors import ConfigError
from slmdeploy.execute.publish import REPORT


@attrs.frozen
class DeployedModel:
    """One built variant: its model folder and, when a registrar ran, where it was registered."""

    name: str
    variant: str
    version: int
    precision: str
    folder: Path
    built_at: str
    registration: dict[str, Any] | None
    gates: str | None = None
    """``passed`` or ``failed`` when evaluators ran (``report.json``); a failed variant is not registered."""

    @property
    def size_bytes(self) -> int:
        return sum(file.stat().st_size for file in self.folder.rglob("*") if file.is_file())

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "folder": str(self.folder), "size_bytes": self.size_bytes}


class ChatBackend(Protocol):
    """A way to talk to a deployed model, provided by the `slmdeploy_chat_backend` hook."""

    runtime: str
    """What runs the model, for the user: ``Foundry Local (foundry-local-sdk 2.2.1)``."""

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Iterator[str]:
        """Answer the conversation `messages` (role/content dicts), yielding text as it is generated."""
        ...

    @property
    def finish_reason(self) -> str:
        """``stop`` or ``length`` for the last answer."""
        ...

    def close(self) -> None: ...


def deployed_models(build_dir: Path) -> list[DeployedModel]:
    return sorted(_read(build_dir), key=lambda model: model.name)


def _read(build_dir: Path) -> Iterator[DeployedModel]:
    for manifest_file in sorted(build_dir.glob("*/manifest.json")):
        try:
            yield _deployed(manifest_file, json.loads(manifest_file.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                f"the build manifest is damaged ({error!r})",
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
    raise ConfigError(f"no deployed model is named {name!r}", where=str(build_dir), fix=f"Deployed models: {listing}.")
