"""``algorithm = "gptq"`` and ``"hqq"``: onnxruntime's own weight-only quantizers, run on the MatMuls of the float32
export (or of the keep_int8 pass's output) before the round-to-nearest pass and the surgery.

- gptq: ``onnxruntime.quantization.neural_compressor.gptq_quantize`` (the GPTQ of ``MatMulNBitsQuantizer``), which
  runs the float model on CPU over calibration sequences tokenized from the project's ``[quantize] calibration``
  text, and rounds each weight column so that the error it leaves is corrected in the columns after it.
- hqq: ``HQQWeightOnlyQuantizer`` (half-quadratic search for each block's scale and float zero point, no data).

Neither quantizes a Gather, so the embedding table is left to the round-to-nearest pass that follows; when the
model's lm_head is that table (tied) and the table is quantized, lm_head is left to it too, so that both keep equal
blocks and ``TieWordEmbeddings`` shares one table, as for rtn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmdeploy.plugin import ConfigError
from slmdeploy.plugin.files import read_text_file

MODEL = "model.onnx"
DATA = "model.onnx.data"
KEY = "[quantize] calibration"
MAX_SEQUENCES = 16
MAX_TOKENS = 256
# onnxruntime's GPTQ runs the model from one serialized protobuf, which cannot exceed 2 GB.
MAX_GPTQ_BYTES = 2 * 1024**3


def read_calibration(file: Path) -> list[str]:
    """The blank-line separated passages of `file`, or a `ConfigError` naming it and the key."""
    fix = "Name a plain text file saved as UTF-8: passages of your own domain, separated by blank lines."
    passages = [passage.strip() for passage in read_text_file(file, KEY, fix).split("\n\n") if passage.strip()]
    if not passages:
        raise ConfigError(
            f"{file} holds no text",
            where=KEY,
            fix="Name a UTF-8 text file of passages like the ones the model will see, separated by blank lines.",
        )
    return passages


def quantize_matmuls(
    task: dict[str, Any], source: Path, tokenizer: Path, out: Path, progress: Callable[[str], None]
) -> None:
    """Quantize `source`'s float MatMuls with `task`'s algorithm into `out`, leaving out `task`'s excluded nodes
    and a tied lm_head (see the module docstring); gptq's calibration text is tokenized with `tokenizer`'s."""
    import onnx

    model = onnx.load(str(source / MODEL))
    excluded = set(task["exclude"]) | _tied_head(model, task["keep_embeddings_float"])
    if task["algorithm"] == "gptq":
        quantized = _gptq(model, tokenizer, task, excluded, progress)
    else:
        quantized = _hqq(model, task, excluded)
    _set_accuracy_level(quantized, task["accuracy_level"])
    out.mkdir(parents=True)
    onnx.save(quantized, str(out / MODEL), save_as_external_data=True, all_tensors_to_one_file=True, location=DATA)


def _gptq(
    model: Any, tokenizer: Path, task: dict[str, Any], excluded: set[str], progress: Callable[[str], None]
) -> Any:
    from onnxruntime.quantization.neural_compressor import gptq_quantize, weight_only

    if model.ByteSize() >= MAX_GPTQ_BYTES:
        raise ConfigError(
            f"the float32 export is {model.ByteSize() / 1e9:.1f} GB; onnxruntime's GPTQ runs it from one protobuf, "
            "at most 2 GB",
            where="[quantize] algorithm",
            fix='Use algorithm = "rtn", "k_quant" or "hqq" for a model of this size.',
        )
    feeds = calibration_feeds(model, tokenizer, task["calibration"])
    progress(f"gptq: calibrating on {len(feeds)} sequences of up to {MAX_TOKENS} tokens")
    matmuls = [node.name for node in model.graph.node if node.op_type == "MatMul"]
    # onnxruntime 1.31's gptq never passes a rounding error on, and its packing picks new scales (see gptq_columns)
    weight_only.gptq, weight_only.quant_tensor = gptq_columns, _on_grid(weight_only.quant_tensor)
    quantized = gptq_quantize(
        model,
        dataloader=((feed, None) for feed in feeds),
        weight_config={name: "fp32" for name in matmuls if name in excluded},
        num_bits=4,
        group_size=task["block_size"],
        scheme="sym" if task["symmetric"] else "asym",
        n_samples=-1,
        percdamp=0.01,
        blocksize=128,
        actorder=False,
        mse=False,
        perchannel=True,
    )
    return quantized.model


def gptq_columns(  # type: ignore[no-untyped-def]
    W, H, num_bits=4, group_size=32, scheme="asym", blocksize=128, percdamp=0.01, **_ignored
):
    """GPTQ of a [K, N] MatMul weight given the Hessian `H` of its K inputs: the fake-quantized weight.

    onnxruntime 1.31's ``neural_compressor.weight_only.gptq`` takes the inverse Hessian's Cholesky factor U (upper
    triangular) and spreads row i's rounding error with ``U[i:, i]`` and ``U[i2:, i1:i2]``, which are zero below the
    diagonal: no error reaches a later row, and its output does not depend on the calibration data at all (it is
    round to nearest with its own scales). This is the same algorithm with the rows of U (Frantar et al. 2022)."""
    import numpy as np
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor

    W = W.astype(np.float64).copy()
    rows = W.shape[0]
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[dead, :] = 0
    H[np.diag_indices(rows)] += percdamp * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    maxq = 2**num_bits - 1
    grid: list[tuple[Any, Any]] = []
    for i1 in range(0, rows, blocksize):
        i2 = min(i1 + blocksize, rows)
        errors = np.zeros((i2 - i1, W.shape[1]))
        for i in range(i1, i2):
            if i % group_size == 0:
                grid.append(_group_params(W[i : i + group_size], num_bits, scheme, quant_tensor))
            scale, zero = grid[-1]
            Q[i] = scale * (np.clip(np.round(W[i] / scale) + zero, 0, maxq) - zero)
            errors[i - i1] = (W[i] - Q[i]) / U[i, i]
            W[i + 1 : i2] -= np.outer(U[i, i + 1 : i2], errors[i - i1])
        W[i2:] -= U[i1:i2, i2:].T @ errors
    _GRID.append(grid)
    return Q


# The scales and zero points of the last weight `gptq_columns` made, for the packing that follows it.
_GRID: list[list[tuple[Any, Any]]] = []


def _group_params(rows, num_bits, scheme, quant_tensor):  # type: ignore[no-untyped-def]
    """Each column's scale and zero point over one group of rows, as onnxruntime's packing computes them."""
    import numpy as np

    _, scale, zero = quant_tensor(np.ascontiguousarray(rows.T), num_bits, rows.shape[0], scheme, "uint")
    return scale.reshape(-1), zero.reshape(-1).astype(np.float64)


def _on_grid(quant_tensor):  # type: ignore[no-untyped-def]
    """onnxruntime's packing of a GPTQ weight, with the scales GPTQ rounded to (its own would be taken from the
    rounded weight's range, and move every value off the grid)."""

    def pack(data, num_bits=4, group_size=32, scheme="asym", dtype="int", ratio=1.0):  # type: ignore[no-untyped-def]
        import numpy as np

        if not _GRID:
            return quant_tensor(data, num_bits, group_size, scheme, dtype, ratio)
        grid = _GRID.pop()
        scale = np.stack([group[0] for group in grid], axis=1).reshape(-1, 1)  # [N x groups, 1], as data's rows
        zero = np.stack([group[1] for group in grid], axis=1).reshape(-1, 1)
        blocks = np.reshape(data, (-1, group_size))
        return np.clip(np.round(blocks / scale) + zero, 0, 2**num_bits - 1), scale, zero.astype(np.uint8)

    return pack


def _hqq(model: Any, task: dict[str, Any], excluded: set[str]) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = HQQWeightOnlyQuantConfig(block_size=task["block_size"], bits=4, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=sorted(excluded), algo_config=config)
    quantizer.process()
    return quantizer.model.model


def calibration_feeds(model: Any, folder: Path, passages: list[str]) -> list[dict[str, Any]]:
    """The decoder's inputs for each calibration sequence: at most `MAX_SEQUENCES` of at most `MAX_TOKENS` tokens
    (or the context length; longer passages are cut into several), each a prompt with an empty KV cache. `folder`
    holds the tokenizer and genai_config.json, which gives the KV cache's shape."""
    import numpy as np
    from transformers import AutoTokenizer

    config = json.loads((folder / "genai_config.json").read_text("utf-8"))["model"]
    length = min(MAX_TOKENS, config.get("context_length") or MAX_TOKENS)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    passages_ids = [tokenizer(passage)["input_ids"] for passage in passages]
    sequences = [ids[start : start + length] for ids in passages_ids for start in range(0, len(ids), length)]
    cache = (config["decoder"]["num_key_value_heads"], config["decoder"]["head_size"])
    return [_feed(model, np.array([ids], dtype=np.int64), cache) for ids in sequences[:MAX_SEQUENCES]]


def _feed(model: Any, ids: Any, cache: tuple[int, int]) -> dict[str, Any]:
    import numpy as np
    from onnx import helper

    feed: dict[str, Any] = {}
    for graph_input in model.graph.input:
        name, tensor = graph_input.name, graph_input.type.tensor_type
        if name == "input_ids":
            feed[name] = ids
        elif name == "attention_mask":
            feed[name] = np.ones_like(ids)
        elif name == "position_ids":
            feed[name] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
        elif name.startswith("past_key_values."):
            empty = np.zeros((1, cache[0], 0, cache[1]), dtype=helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            feed[name] = empty
        else:
            raise ConfigError(
                f"the converted model has an input gptq cannot calibrate with: {name}",
                where="[quantize] algorithm",
                fix='Use algorithm = "rtn", "k_quant" or "hqq" for this model.',
            )
    return feed


def _tied_head(model: Any, embeddings_float: bool) -> set[str]:
    """lm_head's MatMul when its weight is the embedding table transposed and that table is quantized: it is left
    to the round-to-nearest pass, which gives both equal blocks to share."""
    from onnx import numpy_helper

    if embeddings_float:
        return set()
    tables = {init.name: init for init in model.graph.initializer}
    lookup = next((n for n in model.graph.node if n.op_type == "Gather" and "input_ids" in n.input), None)
    head = next((n for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output), None)
    if lookup is None or head is None or lookup.input[0] not in tables or head.input[1] not in tables:
        return set()
    table, weight = (numpy_helper.to_array(tables[name]) for name in (lookup.input[0], head.input[1]))
    return {head.name} if table.T.shape == weight.shape and (weight == table.T).all() else set()


def _set_accuracy_level(model: Any, level: int) -> None:
    """HQQ's nodes carry no accuracy level (and GPTQ's only when asked): give every new node the option's."""
    from onnx import helper

    if not level:
        return
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [attribute for attribute in node.attribute if attribute.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("accuracy_level", level)])
