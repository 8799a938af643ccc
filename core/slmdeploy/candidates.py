"""A quantization search's targets and its candidates: the types the planner, the search and a quantizer's
`slmdeploy_quantize_candidates` hook share.

``[quantize] search = { min_top1 = 0.9, max_size_mb = 120, prefer = "decode" }`` asks for candidate settings of the
quantizer, each built and evaluated as a variant of its own; the search deploys the best that meets the targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

PREFERENCES = {"decode": ("decode_tokens_per_s", "max"), "size": ("size_mb", "min")}
"""What the search maximises or minimises among the candidates that meet the targets: the figure and the way."""
TARGETS = {"min_top1": ("top1_agreement", "min"), "max_size_mb": ("size_mb", "max")}
"""Each target of the search as the gate it becomes: the figure it bounds and the bound."""


@attrs.frozen
class QuantizeSearch:
    """``[quantize] search``: the targets every candidate is judged against, and what to prefer among those that
    meet them."""

    min_top1: float | None = None
    """Teacher-forced top-1 agreement with the source model (``top1_agreement``), at least."""
    max_size_mb: float | None = None
    """The package's size on disk (``size_mb``), at most."""
    prefer: str = "decode"
    """``decode``: the fastest decoder (``decode_tokens_per_s``); ``size``: the smallest package."""
    candidates: tuple[str, ...] = ()
    """The names of the candidates to try, in the quantizer's order; empty: all of them."""


@attrs.frozen
class Candidate:
    """One candidate setting a quantizer proposes: `options` override keys of the project's ``[quantize]`` table,
    and `name` names its variant (``int4-kquant``)."""

    name: str
    options: Mapping[str, Any]
    note: str = ""
    """One line for ``slmdeploy plan``: what the candidate changes, and what it is expected to cost."""
