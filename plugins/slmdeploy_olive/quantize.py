"""``[quantize] plugin = "olive"``: the float32 export to int4, int8, fp16, or a tied float32 copy.

Each precision is an Olive workflow over the converted ONNX model:

- int4 / int8: ``OnnxBlockWiseRtnQuantization`` (round to nearest, MatMulNBits) or ``OnnxKQuantQuantization``;
  int4 also turns the embedding table into a GatherBlockQuantized one (k-quant: with the k-quant pass's own
  blocks, `kquant_embeddings`);
- int4 with ``q4_1`` (the default): the round-to-nearest pass makes the graph, then every 4-bit MatMul gets
  llama.cpp's Q4_1 blocks of the float weights, a scale and a minimum per block, carried as a Q4_1 GGUF's are
  (`q4_1`); the head and the embedding table stay at 8 bits unless ``keep_int8`` says otherwise;
- int4 with ``gptq`` (calibrated on ``[quantize] calibration``) or ``hqq``: onnxruntime's own quantizers on the
  MatMuls first (`weight_only`), then the round-to-nearest pass on what they leave (the embedding, a tied lm_head).
  Olive 0.13's ``OnnxHqqQuantization`` is not used: on the demo model it made a 755 MB model with top-1 agreement
  0.0 (docs/quantization.md);
- ``keep_int8``: a round-to-nearest 8-bit pass over the named parts runs first, and the 4-bit pass skips them;
- fp16: ``OnnxFloatToFloat16``, for GPU execution providers only (built and checked here, never run: this
  machine has no GPU);
- int4 from a GGUF source whose weights are block-quantized (Q4_0, Q4_1, Q4_K, Q8_0): the GGUF's own blocks replace
  the requantized ones wherever they decode to the export's weights (`gguf_carry`), so the model keeps the
  weights the fine-tune shipped instead of a double quantization; ``quantization.json`` says which were kept;
- then ``GraphSurgeries``: Olive's RTN pass renames a quantized graph output (``logits`` -> ``logits_Q4``),
  which the runtime looks up by name, so it is renamed back; ``TieWordEmbeddings`` shares one table between
  the embedding and ``lm_head`` when their weights are equal (a tied source model), as the plain builder does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs

from slmdeploy.plugin import ConfigError, OnnxModel, QuantizedModel, Quantizer, option
from slmdeploy.plugin.worker import run_in_worker
from slmdeploy_olive.nodes import check_keep_float
from slmdeploy_olive.weight_only import MAX_SEQUENCES, MAX_TOKENS, read_calibration
from slmdeploy_olive.workflow import OLIVE_ENVIRONMENT, LibraryVersioned

BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
GPU_ONLY = {"fp16"}
HEAD = ("lm_head", "embeddings")  # what q4_1 keeps at 8 bits unless keep_int8 is set


@attrs.define
class QuantizeOptions:
    precision: Literal["int4", "int8", "fp32", "fp16"] = option(
        "int4",
        variants=True,
        help="weight precision; a list builds one variant per value. fp16 is for GPU devices ([convert] device)",
    )
    block_size: int = option(
        32, help="weights per quantization block (int4, int8)", validator=attrs.validators.in_(BLOCK_SIZES)
    )
    symmetric: bool = option(
        True, help="rtn: symmetric blocks (no zero points); false stores a zero point per block. k_quant is asymmetric"
    )
    algorithm: Literal["q4_1", "rtn", "k_quant", "gptq", "hqq"] = option(
        "q4_1",
        help="how int4 weights are quantized (int8 is round to nearest with q4_1). q4_1: llama.cpp's Q4_1 blocks, an "
        "fp16 scale and minimum per block, with the head and embedding table at 8 bits (keep_int8); from a GGUF "
        "with Q4_0/Q4_1/Q4_K/Q8_0 blocks, those blocks are kept instead; rtn: round to nearest, symmetric (the "
        "fastest decode, the least faithful); k_quant: llama.cpp's search for each block's scale and offset; "
        "gptq (int4): "
        "GPTQ (onnxruntime's, corrected), calibrated on [quantize] calibration, for experiments (below rtn on the "
        "demo); hqq (int4): half-quadratic scales and float zero points, no data: closer to the source, but "
        "onnxruntime 1.31's CPU MatMulNBits decodes about 12x slower with float zero points (docs/quantization.md)",
    )
    calibration: str = option(
        "",
        path=True,
        help="gptq: a UTF-8 text file of your own texts or prompts, passages separated by blank lines; tokenized "
        f"into at most {MAX_SEQUENCES} sequences of at most {MAX_TOKENS} tokens (a longer passage makes several)",
    )
    accuracy_level: int = option(
        4,
        help="MatMulNBits compute type on CPU: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations",
        validator=attrs.validators.in_(ACCURACY_LEVELS),
    )
    keep_float: list[str] = option([], help="names of MatMul or Gather nodes left unquantized, e.g. /lm_head/MatMul")
    keep_int8: list[str] | None = option(
        None,
        help="int4: parts kept at 8 bits (round to nearest, symmetric): lm_head, embeddings, first_layer, last_layer, "
        "or MatMul/Gather node names; unset: lm_head and embeddings with q4_1 (unless a GGUF's blocks are kept), "
        "none otherwise; [] keeps none",
    )
    quantize_embeddings: bool | None = option(
        None,
        help="quantize the token embedding table too; by default int4 does (sharing lm_head's table when the "
        "model ties them) and int8 does not, as the plain builder does",
    )
    gguf_blocks: bool = option(
        True,
        help="when the source is a block-quantized GGUF (q4_0, q4_1, q4_k, q8_0), int4 keeps its blocks instead of "
        "quantizing the dequantized weights again (needs rtn, symmetric, block_size 32)",
    )


class OliveQuantizer(LibraryVersioned, Quantizer):
    PLUGIN_NAME = "olive"
    CACHE_VERSION = "5"  # 2: int4 from a GGUF keeps the GGUF's blocks; 3: k_quant quantizes the embedding table;
    # 4: the GGUF offsets' block sums by ReduceSum; 5: q4_1, and keep_int8's 8-bit head tied to the embedding

    Options = QuantizeOptions

    @classmethod
    def check(cls, options: QuantizeOptions) -> None:
        for problem, fix in _refusals(options):
            raise ConfigError(f"[quantize] {problem}", where="[quantize]", fix=fix)

    def run(self, artifact: OnnxModel, output_dir: Path) -> QuantizedModel:
        check_keep_float(artifact.path / "model.onnx", self.options.keep_float)
        device = artifact.execution_provider
        options = self.options
        embeddings = embeds(options)
        gguf, gguf_note = self._gguf_blocks()
        q4_1 = options.algorithm == "q4_1" and options.precision == "int4"
        if q4_1 and self._adapter_on_blocks():
            q4_1, gguf_note = False, f"{gguf_note}. {ADAPTER_ON_BLOCKS}"
        parts = int8_parts(options, carried=gguf is not None or not q4_1)
        task = {
            "input": str(artifact.path),
            "device": device,
            "passes": passes(options, parts),
            "keep_embeddings_float": not embeddings,
            "keep_int8": parts,
            "kquant_embeddings": embeddings and options.algorithm == "k_quant",
            "weight_only": self._weight_only() if options.algorithm in WEIGHT_ONLY else None,
            "q4_1": q4_1,
            "scratch": str(self.context.scratch),
            "out": str(output_dir / "model"),
            "gguf": gguf,
            "gguf_note": gguf_note,
        }
        run_in_worker(
            "slmdeploy_olive.quantize_worker:quantize_in_worker", task, self.context, "quantize", OLIVE_ENVIRONMENT
        )
        return QuantizedModel(output_dir / "model", precision=self.options.precision, execution_provider=device)

    def _weight_only(self) -> dict[str, Any]:
        """What the worker's gptq or hqq step needs; the calibration passages are read here, so that a bad file is
        a `ConfigError` before any work."""
        options = self.options
        calibration = options.calibration and options.algorithm == "gptq"
        return {
            "algorithm": options.algorithm,
            "block_size": options.block_size,
            "symmetric": options.symmetric,
            "accuracy_level": options.accuracy_level,
            "exclude": options.keep_float,
            "keep_embeddings_float": not embeds(options),
            "calibration": read_calibration(self.context.project_dir / options.calibration) if calibration else [],
        }

    def _adapter_on_blocks(self) -> bool:
        """Whether a LoRA adapter is merged into a block-quantized GGUF's weights (`ADAPTER_ON_BLOCKS`)."""
        source = self.context.source
        return source is not None and source.format == "gguf" and source.adapter is not None

    def _gguf_blocks(self) -> tuple[str | None, str]:
        """The GGUF file whose blocks to carry, or None and why not."""
        source, options = self.context.source, self.options
        if source is None or source.format != "gguf":
            return None, ""
        reasons = {
            "gguf_blocks = false": not options.gguf_blocks,
            f"precision {options.precision} (carried for int4)": options.precision != "int4",
            f"block_size {options.block_size} (GGUF blocks hold 32)": options.block_size != 32,
            f"algorithm {options.algorithm} (they are carried for rtn and q4_1)": options.algorithm not in CARRIED,
            "keep_int8": bool(options.keep_int8),
            "symmetric = false": not options.symmetric,
            "a LoRA adapter changes the weights": source.adapter is not None,
        }
        against = [reason for reason, applies in reasons.items() if applies]
        if against:
            return None, "the GGUF's blocks are not kept: " + ", ".join(against)
        return str(source.path), ""


def int8_parts(options: QuantizeOptions, carried: bool) -> list[str]:
    """The parts an int4 model keeps at 8 bits: keep_int8 as set; unset, the head and the embedding table with q4_1
    (as llama.cpp keeps them in its Q4_1 files) unless a GGUF's own blocks are carried (they hold their own) or
    q4_1 is not used (`carried` then too)."""
    if options.precision != "int4":
        return []
    if options.keep_int8 is not None:
        return list(options.keep_int8)
    return list(HEAD) if options.algorithm == "q4_1" and not carried else []


def embeds(options: QuantizeOptions) -> bool:
    """Whether the token embedding table is quantized: as set, else for int4 only (as the plain builder does)."""
    return options.precision == "int4" if options.quantize_embeddings is None else options.quantize_embeddings


def _refusals(options: QuantizeOptions) -> list[tuple[str, str]]:
    """The option combinations that cannot be honoured, each with how to fix it."""
    if options.keep_int8 and options.precision != "int4":
        problem = f"keep_int8 keeps parts of an int4 model at 8 bits; precision is {options.precision}"
        return [(problem, 'Use precision = "int4", or leave out keep_int8.')]
    if options.algorithm in WEIGHT_ONLY and options.precision == "int8":
        problem = (
            f"algorithm {options.algorithm} makes int4 only; precision is int8 (onnxruntime's GPTQ stores 8-bit "
            "weights as float, and 8-bit HQQ is not offered by this plugin)"
        )
        return [(problem, 'Use precision = "int4" with it, or algorithm = "rtn" for int8.')]
    if options.algorithm == "q4_1" and not options.symmetric and options.precision == "int4":
        problem = (
            "symmetric = false stores a zero point per round-to-nearest block, and algorithm is q4_1 (the default), "
            "whose blocks each hold their own minimum"
        )
        return [(problem, 'Add algorithm = "rtn" to use zero points, or leave out symmetric.')]
    if options.algorithm == "gptq" and not options.calibration:
        problem = "algorithm gptq needs calibration text, and calibration is not set"
        fix = (
            'Add calibration = "evaluation/calibration.txt" (relative to slmdeploy.toml): a UTF-8 file of texts '
            "and prompts like the ones the model will see, passages separated by blank lines."
        )
        return [(problem, fix)]
    return []


def passes(options: QuantizeOptions, int8: list[str] | None = None) -> dict[str, Any]:
    """The Olive passes that make `options.precision` from the float32 export, `int8` the parts kept at 8 bits
    (`int8_parts`; keep_int8 as set if not given). Node lists that need the graph (keep_int8's, the embedding) are
    filled in by the worker."""
    int8 = list(options.keep_int8 or []) if int8 is None else int8
    external = {"save_as_external_data": True, "all_tensors_to_one_file": True, "external_data_name": "model.onnx.data"}
    chain: dict[str, Any] = {}
    if options.precision in ("int4", "int8"):
        bits = int(options.precision[3:])
        if int8 and bits == 4:
            chain["keep_int8"] = {
                "type": "OnnxBlockWiseRtnQuantization",
                "bits": 8,
                "block_size": options.block_size,
                "accuracy_level": options.accuracy_level,
                "is_symmetric": True,
                **external,
            }
        chain["quantize"] = {
            "type": ALGORITHM_PASSES[options.algorithm],
            "block_size": options.block_size,
            "accuracy_level": options.accuracy_level,
            "nodes_to_exclude": options.keep_float or None,
            **external,
        }
        chain["quantize"]["bits"] = bits
        if options.algorithm != "k_quant":
            chain["quantize"]["is_symmetric"] = options.symmetric
    elif options.precision == "fp16":
        chain["quantize"] = {"type": "OnnxFloatToFloat16", "keep_io_types": False, **external}
    if options.precision == "fp16":
        # GraphSurgeries on the float16 graph drops the KV-cache inputs; the tables stay untied in fp16.
        return chain
    surgeries: list[dict[str, Any]] = [{"surgeon": "TieWordEmbeddings"}]
    if options.precision in ("int4", "int8"):
        renamed = f"logits_Q{options.precision[3:]}"
        surgeries.insert(0, {"surgeon": "RenameOutputs", "old_names": [renamed], "new_names": ["logits"]})
    chain["surgery"] = {"type": "GraphSurgeries", "surgeries": surgeries, **external}
    return chain


# gptq and hqq run onnxruntime's quantizers first (`weight_only`); rtn then quantizes what they leave (the embedding).
ALGORITHM_PASSES = {
    "rtn": "OnnxBlockWiseRtnQuantization",
    "k_quant": "OnnxKQuantQuantization",
    "q4_1": "OnnxBlockWiseRtnQuantization",  # the graph; the worker then gives its MatMuls Q4_1 blocks (`q4_1`)
    "gptq": "OnnxBlockWiseRtnQuantization",
    "hqq": "OnnxBlockWiseRtnQuantization",
}
WEIGHT_ONLY = ("gptq", "hqq")
CARRIED = ("rtn", "q4_1")  # the algorithms with which a GGUF source's blocks are kept where it has them
ADAPTER_ON_BLOCKS = (
    "Round to nearest instead of q4_1: the adapter moves each weight by less than a step of the GGUF's blocks, so "
    "Q4_1 blocks would find the base's grid again and round the fine-tune away (the merged int4 answered as the "
    'base); adapters = "runtime" keeps both exactly'
)
