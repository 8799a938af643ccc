"""Answers from the package as a user gets them: the deployed prompt template, its stop tokens, its search
options (greedy, so figures repeat). Runs inside the worker process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.plugin import load_genai_model
from slmdeploy_evaluate.measure import PeakMemory
from slmdeploy_evaluate.reference import context_tokens, genai_config


class Chat:
    """Single-turn chat with a package: ``PromptTemplate.prompt`` of its ``inference_model.json``."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import numpy as np
        import onnxruntime_genai as og

        self.og, self.np = og, np
        self.model = load_genai_model(folder, threads)
        self.tokenizer = og.Tokenizer(self.model)
        info = json.loads((folder / "inference_model.json").read_text(encoding="utf-8"))
        self.template = info["PromptTemplate"]["prompt"]
        eos = genai_config(folder)["model"].get("eos_token_id", [])
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.max_length = context_tokens(folder, deployed=True)

    def prompt_ids(self, content: str, max_new: int, truncate: bool) -> Any:
        ids = self.tokenizer.encode(self.template.replace("{Content}", content))
        if truncate and len(ids) + max_new > self.max_length:
            # keep the end of the user's text: the template's head and tail, and as much content as fits
            fixed = len(self.tokenizer.encode(self.template.replace("{Content}", "")))
            content_ids = self.tokenizer.encode(content)
            kept = content_ids[len(content_ids) - max(0, self.max_length - max_new - fixed - 2) :]
            ids = self.tokenizer.encode(self.template.replace("{Content}", self.tokenizer.decode(kept)))
        return ids

    def answer(self, content: str, max_new: int, truncate: bool = False) -> dict[str, Any]:
        """The greedy answer, whether it ended with a stop token or the length limit, and its timing."""
        ids = self.prompt_ids(content, max_new, truncate)
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=min(self.max_length, len(ids) + max_new))
        generator = self.og.Generator(self.model, params)
        started = time.perf_counter()
        generator.append_tokens(ids)
        tokens: list[int] = []
        finish = "length"
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in self.eos:
                finish = "stop"
                break
            tokens.append(token)
        text = self.tokenizer.decode(self.np.array(tokens, dtype=self.np.int32)) if tokens else ""
        return {"answer": text, "finish": finish, "tokens": len(tokens), "seconds": time.perf_counter() - started}


def answers_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Answers to the task's prompts (the domain set, then the built-in questions)."""
    chat = Chat(Path(task["folder"]), task.get("threads"))
    found = []
    for index, item in enumerate(task["prompts"]):
        progress(f"answer {index + 1} of {len(task['prompts'])}")
        found.append(chat.answer(item["prompt"], int(item.get("max_tokens") or task["max_new_tokens"])))
    return {"answers": found}


def soak_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """`requests` answers in a row, cycling through the prompts; resident memory after each."""
    memory = PeakMemory()
    chat = Chat(Path(task["folder"]), task.get("threads"))
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
    chat = Chat(Path(task["folder"]), task.get("threads"))
    content = task["content"]
    if task.get("raw_bytes"):
        # bytes as a server receives them, decoded the lenient way: invalid sequences become lone surrogates
        content = bytes.fromhex(task["raw_bytes"]).decode("utf-8", errors="surrogateescape")
    try:
        result = chat.answer(content, task["max_new_tokens"], truncate=task["truncate"])
    except (RuntimeError, TypeError, ValueError, UnicodeError) as error:
        return {"outcome": "error", "message": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    return {"outcome": "answer", **result}
