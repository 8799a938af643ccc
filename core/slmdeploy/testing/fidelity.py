"""How closely an ONNX Runtime GenAI model follows its PyTorch source, and how fast it decodes.

Teacher-forced: the same token sequence is fed to both, one token at a time into the genai generator, and
the next-token logits are compared at every position.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from slmdeploy.plugin import fidelity, genai


def torch_logits(hf_folder: Path, ids: list[int]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def genai_logits(model_folder: Path, ids: list[int]) -> Any:
    return genai.genai_logits(genai.load_genai_model(model_folder), ids)


def compare(reference: Any, candidate: Any, ids: list[int]) -> dict[str, float]:
    """Top-1 agreement, largest logit difference, mean KL divergence and both perplexities over `ids`."""
    return fidelity.fidelity_figures(fidelity.fidelity_sums(reference, candidate, ids))


def decode_speed(model_folder: Path, prompt: str, new_tokens: int = 128, repeats: int = 3) -> dict[str, float]:
    """Median decode tokens/s and time to first token over `repeats` runs after a warm-up, greedy, on every core
    this process may use (as `slmdeploy run` does)."""
    package = genai.GenaiPackage(model_folder)
    ids = package.encode(prompt)
    runs = [_timed_generation(package, ids, new_tokens) for _ in range(repeats + 1)][1:]
    return {
        "prompt_tokens": len(ids),
        "ttft_ms": statistics.median(run[0] for run in runs) * 1000,
        "decode_tokens_per_s": statistics.median(run[1] for run in runs),
    }


def _timed_generation(package: genai.GenaiPackage, ids: list[int], new_tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    total = len(ids) + new_tokens
    generation = package.generate(ids, new_tokens, min_new_tokens=new_tokens, stop=False, max_length=total)
    next(generation)
    first = time.perf_counter()
    count = 1 + sum(1 for _ in generation)
    return first - started, (count - 1) / (time.perf_counter() - first)
