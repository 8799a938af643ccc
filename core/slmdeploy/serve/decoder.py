"""A package's decoder graph in onnxruntime, with a fixed pool of KV-cache rows that stay where they are.

Every ``past_key_values.N.key/value`` input is one numpy buffer ``[rows, kv_heads, capacity, head_size]``, allocated
once (``np.zeros``: the pages are committed as tokens are written, so an idle row costs address space, not memory).
Each run binds the matching ``present.N.*`` output to the *same* memory: onnxruntime's ``GroupQueryAttention`` then
sees ``past == present`` (its ``past_present_share_buffer`` case) and writes only the new tokens' keys and values, at
each row's own position, which it reads from the row's attention mask (``seqlens_k = ones - 1``). Rows are right-
padded: a row's tokens sit at positions 0..n-1 of its buffer, whatever the other rows hold, so no row is ever moved.

Two kinds of run share the buffers:
- `prefill`: one row, a chunk of its prompt (the kernel takes a chunk after earlier ones only at batch size 1);
- `decode`: rows 0..n-1 at once, one token each. A row that is not decoding in that range (free, or half-way through
  its prompt) is given a placeholder token with a mask of its own length + 1: its placeholder lands just past its
  real tokens, where its next chunk (or request) overwrites it, and the causal mask keeps it out of every other row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmdeploy.errors import InputError

KV_INPUT = "past_key_values."
ELEMENT_TYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}


class Decoder:
    """The decoder of the package in `folder`: `rows` KV rows of `capacity` tokens each, `threads` intra-op threads."""

    def __init__(
        self, folder: Path, rows: int, threads: int, capacity: int | None = None, profile: str | None = None
    ) -> None:
        """`profile`: a file name prefix for onnxruntime's profiler trace, written when `end_profiling` is called."""
        import numpy as np
        import onnxruntime as ort

        from slmdeploy.model.runtime import session_options

        config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        decoder = config["model"]["decoder"]
        self.rows = rows
        self.capacity = int(capacity or config.get("search", {}).get("max_length") or config["model"]["context_length"])
        self.vocab = int(config["model"]["vocab_size"])
        options = ort.SessionOptions()
        settings = session_options(threads)
        options.intra_op_num_threads = settings["intra_op_num_threads"]
        options.inter_op_num_threads = settings["inter_op_num_threads"]
        options.enable_mem_pattern = settings["enable_mem_pattern"]
        if profile:
            options.enable_profiling, options.profile_file_prefix = True, profile
        self.session = ort.InferenceSession(
            str(folder / decoder.get("filename", "model.onnx")), options, providers=["CPUExecutionProvider"]
        )
        inputs = {item.name: item for item in self.session.get_inputs()}
        _refuse_unknown_inputs(folder, inputs)
        self.position_ids = "position_ids" in inputs
        self.ids_type = np.int64 if inputs["input_ids"].type == "tensor(int64)" else np.int32
        self.mask_type = np.int64 if inputs["attention_mask"].type == "tensor(int64)" else np.int32
        head_size = int(decoder["head_size"])
        self.kv: dict[str, Any] = {}
        for name, item in inputs.items():
            if name.startswith(KV_INPUT):
                heads = item.shape[1] if isinstance(item.shape[1], int) else int(decoder["num_key_value_heads"])
                dtype = np.float16 if item.type == "tensor(float16)" else np.float32
                self.kv[name] = np.zeros((rows, heads, self.capacity, head_size), dtype=dtype)
        logits = self.session.get_outputs()[0]
        self.logits = np.zeros((rows, 1, self.vocab), dtype=np.float16 if "16" in logits.type else np.float32)
        self.logits_name = logits.name
        self.last_position_only = logits.shape[1] == 1

    def prefill(self, row: int, ids: list[int], start: int) -> Any:
        """Read `ids` (a chunk of row `row`'s prompt) after the `start` tokens already in its cache; the last token's
        logits ``[vocab]`` (float32)."""
        import numpy as np

        if start + len(ids) > self.capacity:
            raise ValueError(f"row {row} would hold {start + len(ids)} tokens, more than its {self.capacity}")
        tokens = np.asarray([ids], dtype=self.ids_type)
        mask = np.ones((1, start + len(ids)), dtype=self.mask_type)
        positions = np.arange(start, start + len(ids), dtype=np.int64)[None, :]
        logits = self._run(row, 1, tokens, mask, positions, steps=len(ids))
        return logits[0, -1].astype(np.float32)

    def decode(self, tokens: list[int], lengths: list[int]) -> Any:
        """One token for each of rows 0..len(tokens)-1, row i holding `lengths[i]` tokens before it; the logits
        ``[rows, vocab]`` (float32). Rows that are not decoding take any token and their own length (see above)."""
        import numpy as np

        if max(lengths) + 1 > self.capacity:
            raise ValueError(f"a row would hold {max(lengths) + 1} tokens, more than its {self.capacity}")
        count = len(tokens)
        ids = np.asarray(tokens, dtype=self.ids_type)[:, None]
        width = max(lengths) + 1
        mask = (np.arange(width)[None, :] <= np.asarray(lengths)[:, None]).astype(self.mask_type)
        positions = np.asarray(lengths, dtype=np.int64)[:, None]
        logits = self._run(0, count, ids, mask, positions, steps=1)
        return logits[:, -1].astype(np.float32)

    def copy_prefix(self, source: int, target: int, positions: int) -> None:
        """Row `target` holds the keys and values of row `source`'s first `positions` tokens (a prompt they share)."""
        for buffer in self.kv.values():
            buffer[target, :, :positions] = buffer[source, :, :positions]

    def _run(self, first: int, count: int, ids: Any, mask: Any, positions: Any, steps: int) -> Any:
        """Run rows first..first+count-1 with their KV bound in place; the logits (a view of our own buffer when the
        graph returns the last position only)."""
        import numpy as np

        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if self.position_ids:
            binding.bind_cpu_input("position_ids", positions)
        for name, buffer in self.kv.items():
            rows = buffer[first : first + count]  # contiguous: the first axis is the row
            pointer, shape = rows.ctypes.data, list(rows.shape)
            present = "present." + name.removeprefix(KV_INPUT)
            binding.bind_input(name, "cpu", 0, buffer.dtype, shape, pointer)
            binding.bind_output(present, "cpu", 0, buffer.dtype, shape, pointer)
        if self.last_position_only:
            out = self.logits[:count]
            binding.bind_output(self.logits_name, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        else:
            binding.bind_output(self.logits_name, "cpu")
        self.session.run_with_iobinding(binding)
        if self.last_position_only:
            return out
        return np.asarray(binding.get_outputs()[0].numpy())


def _refuse_unknown_inputs(folder: Path, inputs: dict[str, Any]) -> None:
    """The graph's inputs are the ones this decoder feeds (a recurrent or convolutional state is not)."""
    known = {"input_ids", "attention_mask", "position_ids"}
    others = sorted(name for name in inputs if name not in known and not name.startswith(KV_INPUT))
    if others or not {"input_ids", "attention_mask"} <= set(inputs):
        raise InputError(
            f"the decoder graph in {folder} takes inputs the serving engine does not feed ({', '.join(others)}): "
            "it batches models whose only state is the attention's key/value cache",
            fix="Serve this model with `slmdeploy run` one request at a time, or pick a model of another architecture.",
        )
