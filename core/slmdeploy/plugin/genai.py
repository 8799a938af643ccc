"""Running an onnxruntime-genai package: open it, prompt it, generate greedy or sampled tokens.

`GenaiPackage` is what slmdeploy's evaluators, ``slmdeploy run`` and the test helpers use to run a built package,
and what a plugin that runs one should use too::

    from slmdeploy.plugin.genai import GenaiPackage

    package = GenaiPackage(artifact.path, threads=2)
    answer = package.answer("What is the capital of France?", max_new_tokens=32)   # greedy
    answer.text, answer.tokens, answer.finish_reason                                # "...Paris.", [...], "stop"

    ids = package.encode("Once upon a time")
    generation = package.generate(ids, 64, greedy=False, search={"random_seed": 1})  # the package's sampling
    for token in generation:                                                          # one token id at a time
        ...
    generation.finish_reason                                                           # "stop" or "length"

A package is loaded with an explicit intra-op thread count (`session_options`): onnxruntime sizes its pool by
physical cores otherwise, which is one thread on a VM that shows two hyper-threads. onnxruntime-genai and numpy are
imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from slmdeploy.machine import available_cores, resolve_threads
from slmdeploy.model.fidelity import genai_logits
from slmdeploy.model.runtime import ALL_LOGITS_GRAPH, load_genai_model, session_options

__all__ = [
    "ALL_LOGITS_GRAPH",
    "Answer",
    "GenaiPackage",
    "Generation",
    "available_cores",
    "genai_logits",
    "load_genai_model",
    "resolve_threads",
    "session_options",
]


@attrs.frozen
class Answer:
    """A generated answer: its text, its token ids (without the stop token) and why it ended."""

    text: str
    tokens: tuple[int, ...]
    finish_reason: str
    """``stop``: a stop token of the package (``eos_token_id``) ended it; ``length``: the token budget did."""


class Generation:
    """The new tokens of one generation, one token id per iteration. Made by `GenaiPackage.generate`, with the prompt
    already fed (prefilled); `tokens` holds what was yielded and `finish_reason` is set when the iteration ends."""

    def __init__(self, generator: Any, budget: int, stops: frozenset[int]) -> None:
        self.generator = generator
        """The ``onnxruntime_genai.Generator``, for what this class does not cover (``get_logits()``)."""
        self.budget = budget
        self.stops = stops
        self.tokens: list[int] = []
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.finish_reason is not None:
            raise StopIteration
        if len(self.tokens) >= self.budget or self.generator.is_done():
            self.finish_reason = "length"
            raise StopIteration
        self.generator.generate_next_token()
        token = int(self.generator.get_next_tokens()[0])
        if token in self.stops:
            self.finish_reason = "stop"
            raise StopIteration
        self.tokens.append(token)
        return token


ACTIVE_ADAPTER = "active"
"""The name a `GenaiPackage` loads its adapter under."""


class GenaiPackage:
    """An onnxruntime-genai model folder, loaded with `threads` intra-op threads (None or 0: every core this process
    may use), with its tokenizer, its stop tokens and its length limits read from ``genai_config.json``; with
    `adapter` (an ``.onnx_adapter`` file of the folder's runtime LoRA adapters), every generation applies it."""

    def __init__(
        self,
        folder: Path,
        threads: int | None = None,
        overlay: Mapping[str, Any] | None = None,
        adapter: Path | None = None,
    ) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.folder = Path(folder)
        self.config: dict[str, Any] = json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))
        self.model = load_genai_model(self.folder, threads, dict(overlay) if overlay else None)
        self.adapters: Any = None
        if adapter is not None:  # onnxruntime-genai applies an adapter per generator, to every row of it
            self.adapters = og.Adapters(self.model)
            self.adapters.load(str(adapter), ACTIVE_ADAPTER)
        self.tokenizer = og.Tokenizer(self.model)
        eos = self.config["model"].get("eos_token_id", [])
        self.stop_ids = frozenset(int(token) for token in (eos if isinstance(eos, list) else [eos]))
        """Every token that ends an answer: ``model.eos_token_id`` (a template family writes all its stop tokens)."""
        self.context_length = int(self.config["model"]["context_length"])
        """The model's context, prompt and answer together."""
        self.max_length = int(self.config.get("search", {}).get("max_length") or self.context_length)
        """The limit the package is deployed with (``search.max_length``), which Foundry Local enforces."""

    def encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]

    def decode(self, tokens: Sequence[int]) -> str:
        import numpy as np

        return str(self.tokenizer.decode(np.array(tokens, dtype=np.int32))) if len(tokens) else ""

    def user_prompt(self, content: str) -> str:
        """`content` as a user message in the package's ``inference_model.json`` prompt template (as Foundry Local
        prompts it); a package without one (before the template stage) is prompted with `content` alone."""
        info = self.folder / "inference_model.json"
        if not info.is_file():
            return content
        template = json.loads(info.read_text(encoding="utf-8"))["PromptTemplate"]["prompt"]
        return str(template).replace("{Content}", content)

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """A conversation rendered with the package's own chat template, opening the assistant's answer."""
        return str(self.tokenizer.apply_chat_template(json.dumps(list(messages)), add_generation_prompt=True))

    def generate(
        self,
        ids: Sequence[int],
        max_new_tokens: int | None = None,
        *,
        greedy: bool = True,
        search: Mapping[str, Any] | None = None,
        min_new_tokens: int = 0,
        stop: bool = True,
        max_length: int | None = None,
    ) -> Generation:
        """Feed the prompt `ids` and return the `Generation` of at most `max_new_tokens` new tokens (None: until the
        package's `max_length`).

        `greedy`: the most likely token each step; False keeps the package's own search options (sampled when its
        ``[generation] temperature`` is above 0). `search`: more ``set_search_options`` keywords (``random_seed``,
        ``temperature``, ``top_p``, ``top_k``). `min_new_tokens`: the runtime suppresses the end of text before
        then. `stop`: end at a stop token (False: generate through it, for speed measurements). `max_length`: the
        KV cache's length, prompt included (default: the prompt plus `max_new_tokens`, at most `max_length` of the
        package)."""
        budget = max_new_tokens if max_new_tokens is not None else self.max_length
        length = max_length or min(self.max_length, len(ids) + budget)
        options: dict[str, Any] = {"max_length": length}
        if greedy:
            options["do_sample"] = False
        if min_new_tokens:
            options["min_length"] = len(ids) + min_new_tokens
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(**options, **(search or {}))
        generator = self.og.Generator(self.model, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, ACTIVE_ADAPTER)
        generator.append_tokens(ids_array(ids))
        return Generation(generator, budget, self.stop_ids if stop else frozenset())

    def logits(self, ids: Sequence[int]) -> Any:
        """Next-token logits at every position of `ids` (a float32 array, one row per position), the adapter
        applied."""
        return genai_logits(self.model, ids, self.adapters, ACTIVE_ADAPTER if self.adapters is not None else "")

    def answer(self, content: str, max_new_tokens: int, **options: Any) -> Answer:
        """The answer to one user message, prompted as Foundry Local prompts it (`user_prompt`); `options` as
        `generate` takes them (greedy by default)."""
        generation = self.generate(self.encode(self.user_prompt(content)), max_new_tokens, **options)
        tokens = list(generation)
        return Answer(self.decode(tokens), tuple(tokens), generation.finish_reason or "length")


def ids_array(ids: Sequence[int]) -> Any:
    import numpy as np

    return np.asarray(ids, dtype=np.int32)
