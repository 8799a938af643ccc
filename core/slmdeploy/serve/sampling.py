"""Choosing a row's next token from its logits (numpy), the same whatever else is in the batch.

Each request has its own random generator (seeded by its ``seed``, else by the operating system), and its logits are
its own row's, which the decoder computes exactly as it would alone; so a seeded request gives the same answer alone
and in any batch. The order of the steps is Hugging Face's (and onnxruntime-genai's): logit bias and penalties on the
raw logits, then temperature, top-k, top-p, and a draw. ``logprobs`` are those of the penalized logits before
temperature, as vLLM reports them (``raw`` would hide the penalties the answer was drawn under).
"""

from __future__ import annotations

from typing import Any

import attrs

from slmdeploy.serve.events import Sampling

CANDIDATES = 1024


@attrs.frozen
class Choice:
    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


class RowSampler:
    """One request's token chooser: `choose` takes its row's logits and the tokens it has produced so far."""

    def __init__(self, sampling: Sampling, defaults: dict[str, Any], eos: frozenset[int], prompt: list[int]) -> None:
        import numpy as np

        self.sampling, self.eos = sampling, sorted(eos)
        # a temperature the request names decides; without one, the package's own settings (its do_sample too)
        if sampling.temperature is None:
            temperature = defaults.get("temperature", 1.0) if defaults.get("do_sample", True) else 0.0
        else:
            temperature = sampling.temperature
        self.greedy = temperature <= 0
        self.temperature = float(temperature)
        self.top_p = float(defaults.get("top_p", 1.0) if sampling.top_p is None else sampling.top_p)
        self.top_k = int(defaults.get("top_k", 0) if sampling.top_k is None else sampling.top_k)
        repetition = sampling.repetition_penalty
        self.repetition = float(defaults.get("repetition_penalty", 1.0) if repetition is None else repetition)
        self.rng = np.random.default_rng(sampling.seed)
        self.seen = set(prompt)
        self.counts: dict[int, int] = {}
        self.produced = 0

    def choose(self, logits: Any, allowed: Any = None) -> Choice:
        """The next token from `logits` ``[vocab]`` (float32, modified in place); `allowed`: a boolean mask of the
        tokens a grammar permits, or None."""
        import numpy as np

        self._adjust(logits)
        if allowed is not None:
            logits[: len(allowed)][~allowed] = -np.inf
            logits[len(allowed) :] = -np.inf
        token = int(np.argmax(logits)) if self.greedy else self._draw(logits)
        self.produced += 1
        self.seen.add(token)
        self.counts[token] = self.counts.get(token, 0) + 1
        return self._with_logprobs(logits, token)

    def _adjust(self, logits: Any) -> None:
        import numpy as np

        sampling = self.sampling
        for token, bias in sampling.logit_bias:
            logits[token] += bias
        if self.repetition != 1.0 and self.seen:
            seen = np.fromiter(self.seen, dtype=np.int64)
            values = logits[seen]
            logits[seen] = np.where(values > 0, values / self.repetition, values * self.repetition)
        if self.counts and (sampling.frequency_penalty or sampling.presence_penalty):
            tokens = np.fromiter(self.counts, dtype=np.int64)
            counts = np.fromiter(self.counts.values(), dtype=np.float32)
            logits[tokens] -= counts * sampling.frequency_penalty + sampling.presence_penalty
        if self.produced < sampling.min_new and self.eos:
            logits[self.eos] = -np.inf

    def _draw(self, logits: Any) -> int:
        import numpy as np

        scaled = logits / self.temperature
        probs = _softmax(scaled)
        # the candidates: the top-k, else the likeliest CANDIDATES when they hold the top-p mass (the same set a sort
        # of the whole vocabulary gives, found without one: a sort of 49,152 logits costs ~3 ms a row), else all
        size = self.top_k if 0 < self.top_k < scaled.size else min(CANDIDATES, scaled.size)
        order = np.argpartition(-scaled, size - 1)[:size] if size < scaled.size else np.arange(scaled.size)
        if self.top_k <= 0 and size < scaled.size and probs[order].sum() < self.top_p:
            order = np.arange(scaled.size)
        order = order[np.argsort(-scaled[order], kind="stable")]
        kept = probs[order]
        if self.top_p < 1.0:
            mass = kept.sum() if 0 < self.top_k < scaled.size else 1.0  # after top-k, of what top-k kept (HF's order)
            keep = int(np.searchsorted(np.cumsum(kept), self.top_p * mass)) + 1  # the smallest set reaching it
            order, kept = order[:keep], kept[:keep]
        return int(order[self.rng.choice(len(kept), p=kept / kept.sum())])

    def _with_logprobs(self, logits: Any, token: int) -> Choice:
        import numpy as np

        wanted = self.sampling.logprobs
        if wanted is None:
            return Choice(token)
        shifted = logits - np.max(logits)
        logprobs = shifted - np.log(np.sum(np.exp(shifted)))
        top = np.argsort(-logprobs, kind="stable")[:wanted]
        return Choice(token, float(logprobs[token]), tuple((int(t), float(logprobs[t])) for t in top))


def _softmax(values: Any) -> Any:
    import numpy as np

    shifted = np.exp(values - np.max(values))
    return shifted / shifted.sum()
