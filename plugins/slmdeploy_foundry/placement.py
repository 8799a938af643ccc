"""The Foundry Local side of registration, run in a worker process (`slmdeploy.plugin.run_in_worker`).

Placing is atomic: the package is linked into a temporary folder beside ``<cache>/custom/<name>/`` and renamed
into place; the catalog file is copied first. If anything fails, or the worker is interrupted, before the
smoke answer comes back, the registration is undone, the catalog file is written back byte for byte, and the
previous folder is renamed back: Foundry Local's cache and catalog are as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slmdeploy.plugin import InputError, StageError
from slmdeploy.plugin.files import link_tree
from slmdeploy_foundry.registrar import CATALOG_FILE, MARKER

APP_NAME = "slmdeploy"


def register(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    cache, name, model_id = Path(task["cache"]), task["name"], task["model_id"]
    target = cache / "custom" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated worker rolls back too
    started = time.monotonic()
    with _cache_lock(cache):
        owner = _owner(target)
        if target.exists() and (owner is None or owner.get("project") != task["project"]):
            raise InputError(
                f"{target} exists and slmdeploy did not create it for this project, so it is left alone",
                fix="Set another [project] name, or move that folder away yourself.",
            )
        # The token tells a later build whether this folder still holds this registration's package.
        marker = {
            "project": task["project"],
            "model_id": model_id,
            "token": uuid.uuid4().hex,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with _placed(cache, target, Path(task["package"]), marker):
            catalog = local_catalog(cache)
            for previous in {model_id, (owner or {}).get("model_id")} - {None}:
                _unregister(catalog, str(previous))
            progress(f"registering {model_id} in Foundry Local's local catalog")
            model = _register(catalog, target, model_id)
            progress(f"loading {model_id} and asking: {task['prompt']!r}")
            answer, finish, usage = ask(model, task["prompt"], task["max_tokens"])
            check_answer(model_id, task["prompt"], answer, finish, usage)
    return {
        "model_id": model_id,
        "folder": str(target),
        "cache": str(cache),
        "prompt": task["prompt"],
        "answer": answer,
        "finish_reason": finish,
        "usage": usage,
        "token": marker["token"],
        "seconds": round(time.monotonic() - started, 2),
    }


def unregister(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Remove a registration and its folder, only when the folder's marker says this project made it."""
    cache, folder, model_id = Path(task["cache"]), Path(task["folder"]), task["model_id"]
    with _cache_lock(cache):
        owner = _owner(folder)
        if owner is None or owner.get("project") != task["project"] or owner.get("model_id") != model_id:
            return {"removed": f"left {model_id} alone: {folder} is not slmdeploy's for this project (any more)"}
        _unregister(local_catalog(cache), model_id)
        shutil.rmtree(folder)
    return {"removed": f"unregistered {model_id} and removed {folder}"}


@contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Serialize slmdeploy's changes to one Foundry cache across projects (the catalog file is rewritten whole)."""
    import filelock

    cache.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(cache / ".slmdeploy.lock"):
        yield


def local_catalog(cache: Path) -> Any:
    """The local catalog only: it never touches the network (the public catalog retries for seconds offline)."""
    from foundry_local_sdk import CatalogType, Configuration, FoundryLocalManager

    if FoundryLocalManager.instance is None:
        FoundryLocalManager.initialize(
            Configuration(app_name=APP_NAME, model_cache_dir=str(cache), logs_dir=str(cache / "logs"))
        )
    return FoundryLocalManager.instance.get_catalog(CatalogType.LOCAL)


def _register(catalog: Any, folder: Path, model_id: str) -> Any:
    from foundry_local_sdk import ModelInfoBuilder

    with ModelInfoBuilder() as metadata:
        metadata.set_string_property("task", "chat-completion")
        return catalog.register_model(model_path=str(folder), model_id=model_id, metadata=metadata)


def _unregister(catalog: Any, model_id: str) -> None:
    from foundry_local_sdk import FoundryLocalException

    with suppress(FoundryLocalException):  # "model not found"
        catalog.unregister_model(model_id)


def check_answer(model_id: str, prompt: str, answer: str, finish: str, usage: dict[str, int]) -> None:
    """The smoke answer must hold text: no tokens, or tokens that decode to nothing (a stop token at once), fails
    the registration. (An answer of whitespace alone passes: Foundry Local 2.2.1 answers the random-weight test
    models with newlines only, where onnxruntime-genai decodes the same package's tokens as words.)"""
    if usage["completion_tokens"] == 0 or not answer:
        raise StageError(
            f"Foundry Local loaded {model_id} but its answer to {prompt!r} is empty ({usage['completion_tokens']} "
            f"tokens, finish reason {finish})",
            fix="A model that stops at once is usually prompted in the wrong format or with a wrong stop token: "
            "check the template stage's log and family, and run the package with `slmdeploy run` to see its answers.",
        )


def ask(model: Any, prompt: str, max_tokens: int) -> tuple[str, str, dict[str, int]]:
    """Load the model and answer `prompt` once, greedily."""
    from foundry_local_sdk import ChatSession, MessageItem, Request, RequestOptions, SearchOptions

    model.load()
    with ChatSession(model) as session, Request() as request:
        session.set_options(RequestOptions(search=SearchOptions(max_output_tokens=max_tokens, do_sample=False)))
        request.add_item(MessageItem.user(prompt))
        with session.process_request(request) as response:
            text = "".join(item_text(item) for item in response)
            usage = response.get_usage()
            finish = response.finish_reason.name.lower()
    return text, finish, {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def item_text(item: Any) -> str:
    """The text of a response item: a MessageItem (whole answers) or a TextItem (streamed pieces)."""
    if hasattr(item, "is_simple_text") and item.is_simple_text():
        return str(item.get_simple_text())
    return str(getattr(item, "text", ""))


def _owner(folder: Path) -> dict[str, Any] | None:
    try:
        owner: dict[str, Any] = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner


@contextmanager
def _placed(cache: Path, target: Path, package: Path, marker: dict[str, Any]) -> Iterator[None]:
    """`package` at `target` for the duration of the block; on any failure, the cache and catalog as before."""
    catalog_file = cache / CATALOG_FILE
    before = catalog_file.read_bytes() if catalog_file.exists() else None
    staged = Path(tempfile.mkdtemp(prefix=f".slmdeploy-new-{target.name}-", dir=target.parent))
    previous = target.with_name(f".slmdeploy-old-{target.name}-{os.getpid()}")
    moved = False
    try:
        link_tree(package, staged)
        (staged / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if target.exists():
            target.rename(previous)
        staged.rename(target)
        moved = True
        yield
    except BaseException:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the rollback short
            signal.signal(signum, signal.SIG_IGN)
        _close_sdk()
        if moved:
            shutil.rmtree(target, ignore_errors=True)
        if previous.exists():
            previous.rename(target)
        if before is None:
            catalog_file.unlink(missing_ok=True)
        else:
            catalog_file.write_bytes(before)
        raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def _close_sdk() -> None:
    from foundry_local_sdk import FoundryLocalManager

    if FoundryLocalManager.instance is not None:
        with suppress(Exception):
            FoundryLocalManager.instance.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
