"""``slmdeploy run`` through Foundry Local: the registered model, loaded in-process with the SDK."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from slmdeploy_foundry.placement import item_text

# Foundry Local's (onnxruntime-genai's) refusal of a request whose prompt and answer budget exceed the context.
_TOO_LONG = re.compile(r"does not fit between the turn's prompt length|ValidateGeneratorRequestBudget|max_length", re.I)


def count_tokens(folder: Path, messages: list[dict[str, str]]) -> int | None:
    """About how many tokens the conversation is (its texts, without the chat template's few), when the package's
    tokenizer.json can be read."""
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - only a figure for the message
        return None
    return sum(len(tokenizer.encode(message["content"]).ids) for message in messages)


def sdk_installed() -> bool:
    return importlib.util.find_spec("foundry_local_sdk") is not None


def written_threads(folder: Path | None) -> str:
    """The thread count a package's genai_config.json carries (Foundry Local reads only the file)."""
    import json

    config = folder / "genai_config.json" if folder else None
    if config is None or not config.is_file():
        return "unknown"
    options = json.loads(config.read_text(encoding="utf-8"))["model"]["decoder"].get("session_options", {})
    return str(options.get("intra_op_num_threads", "default"))


class FoundryChat:
    """Each answer is a fresh ChatSession given the whole conversation, so the CLI owns the history."""

    def __init__(self, registration: dict[str, Any]) -> None:
        from slmdeploy_foundry.placement import local_catalog

        version = importlib.metadata.version("foundry-local-sdk")
        threads = written_threads(Path(registration["path"]) if registration.get("path") else None)
        self.runtime = (
            f"Foundry Local (foundry-local-sdk {version}, model {registration['model_id']}, "
            f"{threads} threads as built: [runtime] threads)"
        )
        catalog = local_catalog(Path(registration["details"]["cache"]))
        self.model = catalog.get_model_variant(registration["model_id"])
        if self.model is None:
            from slmdeploy.plugin import StageError

            raise StageError(
                f"{registration['model_id']} is not registered in Foundry Local any more",
                fix="Run `slmdeploy build` to register it again.",
            )
        self.model.load()
        self.folder = Path(registration.get("path", ""))
        self._finish = "stop"

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Iterator[str]:
        from foundry_local_sdk import ChatSession, MessageItem, Request, RequestOptions, SearchOptions

        builders = {"system": MessageItem.system, "user": MessageItem.user, "assistant": MessageItem.assistant}
        # Foundry Local asks for 2048 new tokens unless told otherwise, and refuses a request whose prompt plus
        # that budget exceeds the model's context.
        budget = max_tokens or max(1, (self.model.context_length or 4096) // 2)
        with ChatSession(self.model) as session, Request() as request:
            session.set_options(RequestOptions(search=SearchOptions(max_output_tokens=budget)))
            session.set_streaming(True)
            for message in messages:
                request.add_item(builders[message["role"]](message["content"]))
            try:
                with session.process_streaming_request(request) as stream:
                    for item in stream:
                        if text := item_text(item):
                            yield text
                    with stream.final_response as final:
                        self._finish = final.finish_reason.name.lower()
            except Exception as error:
                if not _TOO_LONG.search(str(error)):
                    raise
                raise self._too_long(messages, budget) from None

    def _too_long(self, messages: list[dict[str, str]], budget: int) -> Exception:
        from slmdeploy.plugin import InputError

        counted = count_tokens(self.folder, messages)
        size = f"the prompt is about {counted} tokens; with " if counted else "with "
        return InputError(
            f"{size}{budget} tokens kept for the answer it does not fit the model's context of "
            f"{self.model.context_length} tokens",
            fix="Send a shorter text, lower --max-tokens, or /clear to start a new conversation.",
        )

    @property
    def finish_reason(self) -> str:
        return self._finish

    def close(self) -> None:
        from foundry_local_sdk import FoundryLocalManager

        if FoundryLocalManager.instance is not None:
            FoundryLocalManager.instance.close()
