"""What a project has deployed, as plugins see it: a built variant (`DeployedModel`) and a way to talk to it
(`ChatBackend`), the argument and the answer of the `slmdeploy_chat_backend` hook.

`slmdeploy.deploy.listing` reads them from ``build/<variant>/manifest.json``; ``slmdeploy run`` (and a server)
talks to them through a backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

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

    @property
    def size_bytes(self) -> int:
        return tree_size(self.folder)

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
