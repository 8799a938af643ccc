"""What a project has deployed, as plugins see it: a built variant (`DeployedModel`) and a way to talk to it
(`ChatBackend`), the argument and the answer of the `slmdeploy_chat_backend` hook.

`slmdeploy.deploy.listing` reads them from ``build/<variant>/manifest.json``; ``slmdeploy run`` (and a server)
talks to them through a backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from slmdeploy.artifacts import adapter_file
from slmdeploy.files import tree_size


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
    adapter: str | None = None
    """For a runtime LoRA adapter's variant (``[convert] adapters = "runtime"``): the adapter's name. Its `folder`
    is its base variant's (files shared, the adapter in ``folder/adapters/<adapter>.onnx_adapter``); its `name` is
    ``<base name>:<adapter>`` and its `variant` ``<adapter>-<base variant>``."""
    base: str | None = None
    """The base variant an adapter's variant shares its files with; None for any other variant."""

    @property
    def adapter_file(self) -> Path | None:
        """The adapter's ``.onnx_adapter`` file, for an adapter's variant."""
        return adapter_file(self.folder, self.adapter) if self.adapter else None

    @property
    def size_bytes(self) -> int:
        """What the variant adds on disk: its folder, or for an adapter's variant its adapter file alone."""
        file = self.adapter_file
        return file.stat().st_size if file is not None and file.is_file() else tree_size(self.folder)

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
