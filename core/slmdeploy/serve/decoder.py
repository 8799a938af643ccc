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

Runtime LoRA adapters (a package built with ``[convert] adapters = "runtime"``): the graph takes each adapter's
weights as inputs, one set per run. A prefill binds its row's adapter. A decode whose rows share one adapter (or
none) is one run; rows with different adapters decode in *grouped runs*, one per adapter, each over the rows from its
group's first to its last. A decoding row outside the group gets a placeholder like any other: at its own length
when its group runs later in the step (its real token then overwrites it), one past it when its group already ran
(its next token overwrites it); the buffers hold one spare position for that placeholder of a full row.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.artifacts import ADAPTERS_INDEX
from slmdeploy.errors import InputError

KV_INPUT = "past_key_values."
LORA_INPUT = ".lora_"
"""In the names of a runtime adapter graph's LoRA inputs (``model.layers.0.attn.q_proj.lora_A.MatMul.weight``)."""
PLACEHOLDER = "\x00placeholder"
"""`Decoder.decode`'s adapter for a row that is not decoding (free, or reading its prompt)."""
ELEMENT_TYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}


class Decoder:
    """The decoder of the package in `folder`: `rows` KV rows of `capacity` tokens each, `threads` intra-op threads."""

    def __init__(
        self,
        folder: Path,
        rows: int,
        threads: int,
        capacity: int | None = None,
        adapters: Mapping[str, Path] | None = None,
        profile: str | None = None,
    ) -> None:
        """`adapters`: the runtime LoRA adapters to load, by name, each an ``.onnx_adapter`` file of the package;
        `profile`: a file name prefix for onnxruntime's profiler trace, written when `end_profiling` is called."""
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
        with _engine_graph(folder, decoder.get("filename", "model.onnx")) as graph:
            self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        inputs = {item.name: item for item in self.session.get_inputs()}
        empty = _empty_lora_inputs(inputs)
        self.adapters: dict[str | None, dict[str, Any]] = {None: empty}
        """Every LoRA input's value for each adapter (None: the base alone, every one empty)."""
        self.adapters |= {name: {**empty, **_adapter_weights(file)} for name, file in (adapters or {}).items()}
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
                # one spare position: a grouped decode's placeholder for a full row that decoded earlier in the step
                self.kv[name] = np.zeros((rows, heads, self.capacity + 1, head_size), dtype=dtype)
        # the logits are not always the first output (Olive's ExtractAdapters writes the KV outputs first)
        logits = next(item for item in self.session.get_outputs() if not item.name.startswith("present."))
        self.logits = np.zeros((rows, 1, self.vocab), dtype=np.float16 if "16" in logits.type else np.float32)
        self.logits_name = logits.name
        self.last_position_only = logits.shape[1] == 1

    def prefill(self, row: int, ids: list[int], start: int, adapter: str | None = None) -> Any:
        """Read `ids` (a chunk of row `row`'s prompt) after the `start` tokens already in its cache, with `adapter`
        (a runtime LoRA adapter's name) applied; the last token's logits ``[vocab]`` (float32)."""
        import numpy as np

        if start + len(ids) > self.capacity:
            raise ValueError(f"row {row} would hold {start + len(ids)} tokens, more than its {self.capacity}")
        tokens = np.asarray([ids], dtype=self.ids_type)
        mask = np.ones((1, start + len(ids)), dtype=self.mask_type)
        positions = np.arange(start, start + len(ids), dtype=np.int64)[None, :]
        logits = self._run(row, 1, tokens, mask, positions, steps=len(ids), adapter=adapter)
        return logits[0, -1].astype(np.float32)

    def decode(self, tokens: list[int], lengths: list[int], adapters: Sequence[str | None] | None = None) -> Any:
        """One token for each of rows 0..len(tokens)-1, row i holding `lengths[i]` tokens before it, with the
        runtime LoRA adapter `adapters[i]` (`PLACEHOLDER` for a row that is not decoding); the logits
        ``[rows, vocab]`` (float32). Rows that are not decoding take any token and their own length (see above)."""
        import numpy as np

        if max(lengths) + 1 > self.capacity:
            raise ValueError(f"a row would hold {max(lengths) + 1} tokens, more than its {self.capacity}")
        groups = _groups(adapters or [None] * len(tokens))
        if len(groups) <= 1:
            adapter = next(iter(groups), None)
            return self._decode_rows(0, tokens, lengths, adapter)[:, -1].astype(np.float32)
        logits = np.empty((len(tokens), self.vocab), dtype=np.float32)
        done: set[int] = set()
        for adapter, members in groups.items():
            first, last = members[0], members[-1]
            span = range(first, last + 1)
            # a decoding row of another group that ran already holds its token at its length: its placeholder goes
            # one past it
            ids = [tokens[index] if index in members else 0 for index in span]
            held = [lengths[index] + (index in done and index not in members) for index in span]
            out = self._decode_rows(first, ids, held, adapter)
            for index in members:
                logits[index] = out[index - first, -1]
            done.update(members)
        return logits

    def _decode_rows(self, first: int, tokens: list[int], lengths: list[int], adapter: str | None) -> Any:
        import numpy as np

        ids = np.asarray(tokens, dtype=self.ids_type)[:, None]
        width = max(lengths) + 1
        mask = (np.arange(width)[None, :] <= np.asarray(lengths)[:, None]).astype(self.mask_type)
        positions = np.asarray(lengths, dtype=np.int64)[:, None]
        return self._run(first, len(tokens), ids, mask, positions, steps=1, adapter=adapter)

    def copy_prefix(self, source: int, target: int, positions: int) -> None:
        """Row `target` holds the keys and values of row `source`'s first `positions` tokens (a prompt they share)."""
        for buffer in self.kv.values():
            buffer[target, :, :positions] = buffer[source, :, :positions]

    def _run(
        self, first: int, count: int, ids: Any, mask: Any, positions: Any, steps: int, adapter: str | None = None
    ) -> Any:
        """Run rows first..first+count-1 with their KV bound in place and `adapter`'s weights (none: each LoRA input's
        empty default, the base alone); the logits (a view of our own buffer when the graph returns the last
        position only)."""
        import numpy as np

        binding = self.session.io_binding()
        for name, weight in self.adapters[adapter].items():
            binding.bind_cpu_input(name, weight)
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
        return np.asarray(binding.get_outputs()[-1].numpy())  # in the order bound: the logits last


def _groups(adapters: Sequence[str | None]) -> dict[str | None, list[int]]:
    """The decoding rows of each adapter (None: the base), in row order; placeholder rows belong to none."""
    groups: dict[str | None, list[int]] = {}
    for index, adapter in enumerate(adapters):
        if adapter != PLACEHOLDER:
            groups.setdefault(adapter, []).append(index)
    return groups


@contextlib.contextmanager
def _engine_graph(folder: Path, filename: str) -> Iterator[Path]:
    """The graph to load: the package's, or for a package with runtime LoRA adapters a copy in a temporary folder
    whose LoRA inputs have no default. onnxruntime binds no value by name to an input that is also an initializer
    (the empty defaults onnxruntime-genai needs), and applies a `RunOptions` adapter only outside an IO binding; the
    copy's inputs are plain, and every run binds them (empty for the base). Its weights are the package's file,
    hard-linked (onnxruntime refuses a symbolic link that leads out of the graph's folder; copied across file
    systems), read while the session is made."""
    graph = folder / filename
    if not (folder / ADAPTERS_INDEX).is_file():
        yield graph
        return
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    lora = {item.name for item in model.graph.input if LORA_INPUT in item.name}
    kept = [item for item in model.graph.initializer if item.name not in lora]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    with tempfile.TemporaryDirectory(prefix="slmdeploy-engine-") as temporary:
        for item in folder.iterdir():
            if item.is_file() and item.name != filename:
                _link_or_copy(item, Path(temporary) / item.name)
        onnx.save(model, str(Path(temporary) / filename))
        yield Path(temporary) / filename


def _link_or_copy(source: Path, target: Path) -> None:
    import shutil

    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


def _empty_lora_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """An empty (rank 0) value for every LoRA input of the graph: its rank dimension 0, its others as declared."""
    import numpy as np

    empty = {}
    for name, item in inputs.items():
        if LORA_INPUT in name:
            shape = [dim if isinstance(dim, int) else 0 for dim in item.shape]
            empty[name] = np.zeros(shape, dtype=np.float16 if "float16" in item.type else np.float32)
    return empty


def _adapter_weights(file: Path) -> dict[str, Any]:
    """An ``.onnx_adapter`` file's weights by graph input name, as numpy arrays (bound to every run applying it)."""
    import numpy as np
    import onnxruntime as ort

    adapter = ort.AdapterFormat.read_adapter(str(file))  # its values point into it: copied while it is alive
    return {name: np.array(value.numpy(), copy=True) for name, value in adapter.get_parameters().items()}


def _refuse_unknown_inputs(folder: Path, inputs: dict[str, Any]) -> None:
    """The graph's inputs are the ones this decoder feeds (a recurrent or convolutional state is not; runtime LoRA
    weights are, or their empty defaults serve)."""
    known = {"input_ids", "attention_mask", "position_ids"}
    others = sorted(
        name for name in inputs if name not in known and not name.startswith(KV_INPUT) and LORA_INPUT not in name
    )
    if others or not {"input_ids", "attention_mask"} <= set(inputs):
        raise InputError(
            f"the decoder graph in {folder} takes inputs the serving engine does not feed ({', '.join(others)}): "
            "it batches models whose only state is the attention's key/value cache",
            fix="Serve this model with `slmdeploy run` one request at a time, or pick a model of another architecture.",
        )
