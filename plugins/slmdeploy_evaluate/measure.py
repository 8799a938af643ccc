"""What runs inside the worker process: every figure here is of the process doing the inference.

Each ``*_in_worker`` function takes a JSON task and returns a JSON result (see `slmdeploy.plugin.run_in_worker`).
ONNX Runtime GenAI runs the built package; transformers (float32, CPU) runs the source model the same way, one
token at a time with its KV cache, so the two sets of figures compare like for like.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.plugin import SourceModel
from slmdeploy.plugin.files import prepare_source
from slmdeploy.plugin.genai import GenaiPackage
from slmdeploy_evaluate.texts import ENGLISH


class PeakMemory:
    """The largest resident set size of this process, sampled every few milliseconds by a thread (psutil)."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def rss(self) -> int:
        rss = int(self.process.memory_info().rss)
        self.peak = max(self.peak, rss)
        return rss

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.rss())


class GenaiRunner:
    """The package, through onnxruntime-genai: prefill, then one token at a time."""

    def __init__(self, folder: Path, threads: int | None = None, adapter: Path | None = None) -> None:
        self.package = GenaiPackage(folder, threads, adapter=adapter)

    def encode(self, text: str) -> list[int]:
        return self.package.encode(text)

    def start(self, ids: list[int], max_new: int) -> Callable[[], int]:
        """Feed the prompt; return a function producing the next token (greedy, never stopping early, even past the
        package's deployed length: the benchmark measures long prompts)."""
        total = len(ids) + max_new
        generation = self.package.generate(ids, max_new, min_new_tokens=max_new, stop=False, max_length=total)
        return lambda: next(generation)

    def logits(self, ids: list[int]) -> Any:
        return self.package.logits(ids)


class TorchRunner:
    """The source model through transformers, float32 on the CPU, with its KV cache."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def start(self, ids: list[int], max_new: int) -> Callable[[], int]:
        torch = self.torch
        state: dict[str, Any] = {"input": torch.tensor([ids]), "past": None}

        def step() -> int:
            with torch.inference_mode():  # the last position's logits only, as `generate` and our packages do
                output = self.model(
                    input_ids=state["input"], past_key_values=state["past"], use_cache=True, logits_to_keep=1
                )
            token = int(output.logits[0, -1].argmax())
            state["input"], state["past"] = torch.tensor([[token]]), output.past_key_values
            return token

        return step

    def logits(self, ids: list[int]) -> Any:
        with self.torch.inference_mode():
            return self.model(self.torch.tensor([ids])).logits[0].float().numpy()


def prompt_ids(runner: GenaiRunner | TorchRunner, length: int) -> list[int]:
    """`length` tokens of English text (the built-in texts, repeated as needed)."""
    pool = runner.encode(" ".join(ENGLISH))
    while len(pool) < length:
        pool += pool
    return pool[:length]


def speed_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Load time, then time to first token, prompt and decode tokens/s, CPU use at each prompt length."""
    import psutil

    memory = PeakMemory()
    started = time.perf_counter()
    runner = _runner(task)
    load_s = time.perf_counter() - started
    loaded_rss = memory.rss()
    rows = []
    for length in task["lengths"]:
        progress(f"{task['label']}: {length}-token prompt")
        ids = prompt_ids(runner, length)
        runs = [
            _timed(runner, ids, task["new_tokens"], memory.process) for _ in range(task["warmup"] + task["repeats"])
        ]
        measured = runs[task["warmup"] :]
        rows.append(
            {
                "prompt_tokens": length,
                "ttft_ms": statistics.median(run["ttft_s"] for run in measured) * 1000,
                "prompt_tokens_per_s": statistics.median(length / run["ttft_s"] for run in measured),
                "decode_tokens_per_s": statistics.median(run["decode_tokens_per_s"] for run in measured),
                # CPU time is counted in clock ticks: add up every measured run's decode before dividing
                "cpu_percent": 100 * sum(run["cpu_s"] for run in measured) / sum(run["decode_s"] for run in measured),
                "runs": measured,
            }
        )
    return {
        "load_s": load_s,
        "rss_loaded_mb": loaded_rss / 1e6,
        "peak_rss_mb": memory.stop() / 1e6,
        "cpu_count": psutil.cpu_count(),
        "threads": task.get("threads"),
        "lengths": rows,
    }


def _timed(runner: GenaiRunner | TorchRunner, ids: list[int], new_tokens: int, process: Any) -> dict[str, float]:
    started = time.perf_counter()
    step = runner.start(ids, new_tokens)
    step()
    first = time.perf_counter()
    cpu = sum(process.cpu_times()[:2])
    for _ in range(new_tokens - 1):
        step()
    end = time.perf_counter()
    used = sum(process.cpu_times()[:2]) - cpu
    return {
        "ttft_s": first - started,
        "decode_tokens_per_s": (new_tokens - 1) / (end - first),
        "decode_s": end - first,
        "cpu_s": used,
    }


def _runner(task: dict[str, Any]) -> GenaiRunner | TorchRunner:
    if task["runtime"] == "torch":
        return TorchRunner(Path(task["folder"]))
    adapter = task.get("adapter")
    return GenaiRunner(Path(task["folder"]), task.get("threads"), Path(adapter) if adapter else None)


def logits_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Teacher-forced next-token logits of each text (``<out>/<index>.npy``), or of each given token sequence
    (``ids``: the ones the source model was fed). Texts are encoded, and their ids saved as ``<index>.ids.npy``."""
    import numpy as np

    runner = _runner(task)
    out = Path(task["out"])
    sequences = task.get("ids") or [runner.encode(text)[: task["max_tokens"]] for text in task["texts"]]
    for index, ids in enumerate(sequences):
        progress(f"{task['label']}: text {index + 1} of {len(sequences)}")
        np.save(out / f"{index}.npy", runner.logits(ids).astype(np.float32))
        if "ids" not in task:
            np.save(out / f"{index}.ids.npy", np.array(ids, dtype=np.int64))
    return {"tokens": [len(ids) for ids in sequences]}


def prepare_in_worker(task: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """The source model as a Hugging Face folder (GGUF dequantized, LoRA merged), moved into ``out``."""
    adapter = Path(task["adapter"]) if task["adapter"] else None
    source = SourceModel(Path(task["path"]), task["format"], adapter, task["trust_remote_code"])
    folder = prepare_source(source, Path(task["work"]), progress)
    for item in folder.iterdir():
        shutil.move(str(item), Path(task["out"]) / item.name)
    return {}
