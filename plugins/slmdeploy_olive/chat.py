"""``slmdeploy run`` straight through onnxruntime-genai: any built model folder, no registry needed."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

from slmdeploy.plugin import InputError, load_genai_model


class GenaiChat:
    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        version = importlib.metadata.version("onnxruntime-genai")
        self.runtime = f"onnxruntime-genai {version} (directly, {folder}, {threads} threads)"
        self.model = load_genai_model(folder, threads)
        self.tokenizer = og.Tokenizer(self.model)
        self.context = context_length(folder)
        self._finish = "stop"

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Iterator[str]:
        prompt = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        ids = self.tokenizer.encode(prompt)
        check_fits(len(ids), self.context, len(messages) > 1)
        params = self.og.GeneratorParams(self.model)
        if max_tokens:
            params.set_search_options(max_length=min(len(ids) + max_tokens, self.context))
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)
        decoder = self.tokenizer.create_stream()
        eos = set(self.tokenizer.eos_token_ids)
        last = None
        while not generator.is_done():
            generator.generate_next_token()
            last = int(generator.get_next_tokens()[0])
            if last in eos:
                break
            if text := decoder.decode(last):
                yield text
        self._finish = "stop" if last in eos else "length"

    @property
    def finish_reason(self) -> str:
        return self._finish

    def close(self) -> None:
        del self.model


def context_length(folder: Path) -> int:
    """The most tokens, prompt and answer, the package generates: ``search.max_length`` of genai_config.json."""
    config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    return int(config.get("search", {}).get("max_length") or config["model"]["context_length"])


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
