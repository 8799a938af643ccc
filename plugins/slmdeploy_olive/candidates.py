"""``[quantize] search`` with ``plugin = "olive"``: the settings worth measuring, cheapest first (by the bits a
weight costs on the demo model, docs/quantization.md). Each overrides the project's ``[quantize]``
table, so a ``block_size`` or ``keep_float`` given there holds for every candidate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slmdeploy.plugin import Candidate

HEAD = ["lm_head", "embeddings"]


def candidates(table: Mapping[str, Any]) -> list[Candidate]:
    """int4 as the table sets it, the fastest int4, then int4 variations that keep more of the model, then int8."""
    base = {"precision": "int4"}
    return [
        Candidate(
            "int4",
            base,
            "int4 as [quantize] sets it (by default Q4_1 blocks with an 8-bit head and embedding; from a "
            "Q4_0/Q4_1/Q4_K/Q8_0 GGUF: its own blocks)",
        ),
        Candidate(
            "int4-rtn",
            {**base, "algorithm": "rtn", "keep_int8": []},
            "round to nearest, symmetric, 4-bit head: the fastest decode, the least faithful",
        ),
        Candidate("int4-kquant", {**base, "algorithm": "k_quant"}, "k-quant blocks with zero points"),
        Candidate("int4-head8", {**base, "keep_int8": HEAD}, "lm_head and embeddings at 8 bits"),
        Candidate(
            "int4-edge8",
            {**base, "keep_int8": [*HEAD, "first_layer", "last_layer"]},
            "lm_head, embeddings, first and last layer at 8 bits",
        ),
        Candidate("int8", {"precision": "int8"}, "8 bits everywhere but the embeddings: about 3x int4's size"),
    ]
