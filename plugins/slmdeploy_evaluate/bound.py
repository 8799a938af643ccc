"""The memory-bandwidth bound of decoding: how fast this machine reads memory, and how many bytes one decode step
of a model must read. A decoder of a small model reads every weight it multiplies by once per token, plus the KV
cache up to its position, so ``bandwidth / bytes per step`` is the most tokens/s it can reach; a decode speed is
reported as a fraction of that bound.

What a step reads, counted from the model's own files (nothing here runs it):

- an ONNX Runtime GenAI package: every initializer of ``model.onnx`` in full (one stored narrow and widened by
  a Cast, which onnxruntime folds at load, at its widened size), except the tables a lookup reads one
  row of per token (a Gather or GatherBlockQuantized of ``input_ids``; the rotary cos / sin caches of
  GroupQueryAttention), which count one row; the KV cache: 2 (key, value) x layers x KV heads x head size x the
  past inputs' element size, per position;
- a GGUF file (llama.cpp): every tensor in full, the token embedding one row unless it is also the output head
  (no ``output.weight``); llama.cpp's default f16 KV cache.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import attrs

LOOKUPS = ("Gather", "GatherBlockQuantized")
ROTARY_INPUTS = (7, 8)  # GroupQueryAttention's cos_cache and sin_cache: one row per position is read


@attrs.frozen
class StepBytes:
    """Bytes one decode step reads: `weights` (the same at every position) and `kv_per_position` (times the
    position). `parts` names where the weight bytes are (by what reads them), in bytes."""

    weights: int
    kv_per_position: int
    parts: dict[str, int] = attrs.field(factory=dict)

    def at(self, position: float) -> float:
        return self.weights + self.kv_per_position * position

    def bound(self, bandwidth_gb_s: float, position: float) -> float:
        """The tokens/s this step allows at `position` when memory is read at `bandwidth_gb_s`."""
        return bandwidth_gb_s * 1e9 / self.at(position)


def read_bandwidth(threads: int, megabytes: int = 1024, repeats: int = 5) -> float:
    """GB/s of reading a float64 buffer larger than any cache, split across `threads` threads (numpy's sum
    releases the GIL); the best of `repeats` timed passes after a first one that maps the pages."""
    import numpy as np

    buffer = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    chunks = np.array_split(buffer, threads)
    best = float("inf")
    for _ in range(repeats + 1):
        workers = [threading.Thread(target=np.sum, args=(chunk,)) for chunk in chunks]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best / 1e9


def package_step_bytes(folder: Path) -> StepBytes:
    """What one decode step of the GenAI package in `folder` reads (see the module's docstring)."""
    import onnx

    decoder = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    graph = onnx.load(str(folder / decoder.get("filename", "model.onnx")), load_external_data=False).graph
    sizes = {tensor.name: _tensor_bytes(tensor) for tensor in graph.initializer}
    rows = {tensor.name: max(int(tensor.dims[0]), 1) if tensor.dims else 1 for tensor in graph.initializer}
    readers: dict[str, set[str]] = {}
    in_full: set[str] = set()  # read whole by at least one node (a tied head reads the embedding's table)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name not in sizes:
                continue
            if node.op_type == "Cast":  # a stored fp16 value widened once at load: what a step reads is wider
                sizes[name] = (
                    sizes[name] * _itemsize(_attribute(node, "to")) // _itemsize(_initializer_type(graph, name))
                )
            readers.setdefault(name, set()).add(node.op_type)
            lookup = node.op_type in LOOKUPS and index == 0
            if not lookup and not (node.op_type == "GroupQueryAttention" and index in ROTARY_INPUTS):
                in_full.add(name)
    parts: dict[str, int] = {}
    for name, size in sizes.items():
        if name not in readers:
            continue
        read = size if name in in_full else size // rows[name]
        kind = "+".join(sorted(readers[name])).replace("Cast", "fp16 widened at load (Cast)")
        parts[kind] = parts.get(kind, 0) + read
    return StepBytes(sum(parts.values()), _package_kv_bytes(decoder, graph), parts)


def _package_kv_bytes(decoder: dict[str, Any], graph: Any) -> int:
    from onnx import helper

    past = next((value for value in graph.input if value.name.startswith("past_key_values")), None)
    if past is None:
        return 0
    itemsize = helper.tensor_dtype_to_np_dtype(past.type.tensor_type.elem_type).itemsize
    per_layer = int(decoder["num_key_value_heads"]) * int(decoder["head_size"]) * itemsize
    return 2 * int(decoder["num_hidden_layers"]) * per_layer


def _itemsize(data_type: int) -> int:
    from onnx import helper

    return int(helper.tensor_dtype_to_np_dtype(data_type).itemsize)


def _initializer_type(graph: Any, name: str) -> int:
    return int(next(tensor.data_type for tensor in graph.initializer if tensor.name == name))


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next(helper.get_attribute_value(item) for item in node.attribute if item.name == name)


def _tensor_bytes(tensor: Any) -> int:
    """An initializer's size from its header alone (external data is not read)."""
    import math

    from onnx import TensorProto, helper

    if tensor.data_location == TensorProto.EXTERNAL:
        return int({entry.key: entry.value for entry in tensor.external_data}["length"])
    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return math.prod(tensor.dims) * itemsize


def gguf_step_bytes(path: Path, kv_bytes_per_value: int = 2) -> StepBytes:
    """What one decode step of llama.cpp on the GGUF at `path` reads (see the module's docstring)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {tensor.name: int(tensor.n_bytes) for tensor in reader.tensors}
    shapes = {tensor.name: [int(size) for size in tensor.shape] for tensor in reader.tensors}
    tied = "output.weight" not in tensors
    parts: dict[str, int] = {}
    for name, size in tensors.items():
        lookup = name == "token_embd.weight" and not tied
        read = size // shapes[name][-1] if lookup else size  # ggml's shape is [K, N]: one of N rows
        kind = "token_embd (tied head)" if name == "token_embd.weight" and tied else name.split(".")[-2]
        parts[kind] = parts.get(kind, 0) + read
    field = _gguf_fields(reader)
    head_size = field("embedding_length") // field("attention.head_count")
    kv = 2 * field("block_count") * field("attention.head_count_kv") * head_size * kv_bytes_per_value
    return StepBytes(sum(parts.values()), kv, parts)


def _gguf_fields(reader: Any) -> Any:
    architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field(key: str) -> int:
        found = reader.fields[f"{architecture}.{key}"]
        return int(found.parts[found.data[0]][0])

    return field
