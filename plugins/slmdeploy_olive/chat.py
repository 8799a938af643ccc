"""``slmdeploy run`` straight through onnxruntime-genai: any built model folder, no registry needed."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

from slmdeploy.plugin import InputError
from slmdeploy.plugin.genai import GenaiPackage


class GenaiChat:
    def __init__(self, folder: Path, threads: int, adapter: Path | None = None) -> None:
        version = importlib.metadata.version("onnxruntime-genai")
        applied = f", LoRA adapter {adapter.name}" if adapter is not None else ""
        self.runtime = f"onnxruntime-genai {version} (directly, {folder}{applied}, {threads} threads)"
        self.package = GenaiPackage(folder, threads, adapter=adapter)
        self._finish = "stop"

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Iterator[str]:
        """The answer with the package's own search options (sampled as its [generation] table says)."""
        ids = self.package.encode(self.package.chat_prompt(messages))
        check_fits(len(ids), self.package.max_length, len(messages) > 1)
        generation = self.package.generate(ids, max_tokens, greedy=False)
        decoder = self.package.tokenizer.create_stream()
        for token in generation:
            if text := decoder.decode(token):
                yield text
        self._finish = generation.finish_reason or "length"

    @property
    def finish_reason(self) -> str:
        return self._finish

    def close(self) -> None:
        del self.package


def check_fits(prompt_tokens: int, context: int, conversation: bool) -> None:
    """A prompt that leaves no room for an answer is the user's to shorten, not a runtime error."""
    if prompt_tokens < context:
        return
    with_history = " (the conversation so far with this line)" if conversation else ""
    raise InputError(
        f"the prompt is {prompt_tokens} tokens{with_history}, but the model's context holds {context} tokens, "
        "prompt and answer together",
        fix="Send a shorter text" + ("; /clear starts a new conversation." if conversation else "."),
    )
