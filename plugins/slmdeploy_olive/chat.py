"""``slmdeploy run`` straight through onnxruntime-genai: any built model folder, no registry needed."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

from slmdeploy.plugin import load_genai_model


class GenaiChat:
    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        version = importlib.metadata.version("onnxruntime-genai")
        self.runtime = f"onnxruntime-genai {version} (directly, {folder}, {threads} threads)"
        self.model = load_genai_model(folder, threads)
        self.tokenizer = og.Tokenizer(self.model)
        self._finish = "stop"

    def stream(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> Iterator[str]:
        prompt = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        ids = self.tokenizer.encode(prompt)
        params = self.og.GeneratorParams(self.model)
        if max_tokens:
            params.set_search_options(max_length=len(ids) + max_tokens)
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
