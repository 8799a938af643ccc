"""Answers from the package as a user gets them: the deployed prompt template, its stop tokens, its search
options (greedy, so figures repeat). Runs inside the worker process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.plugin.genai import GenaiPackage
from slmdeploy_evaluate.measure import PeakMemory


class Chat:
    """Single-turn chat with a package: ``PromptTemplate.prompt`` of its ``inference_model.json``."""

    def __init__(self, folder: Path, threads: int | None = None, adapter: Path | None = None) -> None:
        self.package = GenaiPackage(folder, threads, adapter=adapter)

    @classmethod
    def of(cls, task: dict[str, Any]) -> Chat:
        """The chat a worker's task names: ``folder``, ``threads`` and, for an adapter's variant, ``adapter``."""
        adapter = task.get("adapter")
        return cls(Path(task["folder"]), task.get("threads"), Path(adapter) if adapter else None)

    def prompt_ids(self, content: str, max_new: int, truncate: bool) -> list[int]:
        package = self.package
        ids = package.encode(package.user_prompt(content))
        if truncate and len(ids) + max_new > package.max_length:
            # keep the end of the user's text: the template's head and tail, and as much content as fits
            fixed = len(package.encode(package.user_prompt("")))
            content_ids = package.encode(content)
            kept = content_ids[len(content_ids) - max(0, package.max_length - max_new - fixed - 2) :]
            ids = package.encode(package.user_prompt(package.decode(kept)))
        return ids

    def answer(self, content: str, max_new: int, truncate: bool = False) -> dict[str, Any]:
        """The greedy answer, whether it ended with a stop token or the length limit, and its timing."""
        ids = self.prompt_ids(content, max_new, truncate)
        started = time.perf_counter()
        generation = self.package.generate(ids, max_new)
        tokens = list(generation)
        text = self.package.decode(tokens)
        seconds = time.perf_counter() - started
        return {"answer": text, "finish": generation.finish_reason, "tokens": len(tokens), "seconds": seconds}


def answers_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Answers to the task's prompts (the domain set, then the built-in questions)."""
    chat = Chat.of(task)
    found = []
    for index, item in enumerate(task["prompts"]):
        progress(f"answer {index + 1} of {len(task['prompts'])}")
        found.append(chat.answer(item["prompt"], int(item.get("max_tokens") or task["max_new_tokens"])))
    return {"answers": found}


def soak_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """`requests` answers in a row, cycling through the prompts; resident memory after each."""
    memory = PeakMemory()
    chat = Chat.of(task)
    rss, seconds = [], []
    for index in range(task["requests"]):
        if index % 25 == 0:
            progress(f"soak: request {index + 1} of {task['requests']}")
        result = chat.answer(task["prompts"][index % len(task["prompts"])], task["max_new_tokens"])
        rss.append(memory.rss() / 1e6)
        seconds.append(result["seconds"])
    return {"rss_mb": rss, "seconds": seconds, "peak_rss_mb": memory.stop() / 1e6}


def edge_case_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """One edge case: an answer, or the clean error the runtime raised for it."""
    chat = Chat.of(task)
    content = task["content"]
    if task.get("raw_bytes"):
        # bytes as a server receives them, decoded the lenient way: invalid sequences become lone surrogates
        content = bytes.fromhex(task["raw_bytes"]).decode("utf-8", errors="surrogateescape")
    try:
        result = chat.answer(content, task["max_new_tokens"], truncate=task["truncate"])
    except (RuntimeError, TypeError, ValueError, UnicodeError) as error:
        return {"outcome": "error", "message": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    return {"outcome": "answer", **result}
