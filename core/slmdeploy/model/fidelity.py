"""How closely a converted model follows its source: teacher-forced next-token logits compared position by
position (top-1 agreement, KL divergence, perplexity of both, largest logit difference).

Shared by the evaluators and the tests. numpy and onnxruntime-genai are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def genai_logits(model: Any, ids: Sequence[int], adapters: Any = None, adapter: str = "") -> Any:
    """Next-token logits at every position of `ids` from a loaded ``onnxruntime_genai.Model``, fed one token at a
    time (the generator returns only the last position's logits); with the runtime LoRA adapter `adapter` of the
    ``onnxruntime_genai.Adapters`` `adapters` active when given."""
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 1, do_sample=False)
    generator = og.Generator(model, params)
    if adapters is not None:
        generator.set_active_adapter(adapters, adapter)
    rows = []
    for token in ids:
        generator.append_tokens(np.array([token], dtype=np.int32))
        rows.append(np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1))
    return np.stack(rows)


def fidelity_sums(reference: Any, candidate: Any, ids: Sequence[int]) -> dict[str, float]:
    """Sums over one token sequence, to add up over several with `add_sums`: positions and top-1 agreements, KL
    divergence from the reference, negative log-likelihoods of both, and the largest logit difference."""
    import numpy as np

    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)[:, : reference.shape[1]]  # padded vocabularies
    reference_log, candidate_log = _log_softmax(reference), _log_softmax(candidate)
    targets, positions = np.asarray(ids[1:]), np.arange(len(ids) - 1)
    return {
        "positions": float(len(ids)),
        "agree": float((candidate.argmax(-1) == reference.argmax(-1)).sum()),
        "kl": float((np.exp(reference_log) * (reference_log - candidate_log)).sum()),
        "predicted": float(len(targets)),
        "nll": float(-candidate_log[positions, targets].sum()),
        "reference_nll": float(-reference_log[positions, targets].sum()),
        "max_abs_logit_diff": float(np.abs(candidate - reference).max()),
    }


def add_sums(sums: Iterable[dict[str, float]]) -> dict[str, float]:
    """The sums of several sequences: added, except the largest logit difference (the largest of all)."""
    total: dict[str, float] = {}
    for item in sums:
        for key, value in item.items():
            if key not in total:
                total[key] = value
            elif key == "max_abs_logit_diff":
                total[key] = max(total[key], value)
            else:
                total[key] += value
    return total


def fidelity_figures(sums: dict[str, float]) -> dict[str, float]:
    """Top-1 agreement, mean KL divergence (nats), both perplexities and the largest logit difference."""
    import math

    return {
        "top1_agreement": sums["agree"] / sums["positions"],
        "mean_kl": sums["kl"] / sums["positions"],
        "perplexity": math.exp(sums["nll"] / sums["predicted"]),
        "reference_perplexity": math.exp(sums["reference_nll"] / sums["predicted"]),
        "max_abs_logit_diff": sums["max_abs_logit_diff"],
    }


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
