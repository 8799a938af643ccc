"""Time onnxruntime's int4 and int8 matrix kernels on this CPU, at the rows a decode batch and a prompt chunk give.

    python benchmarks/bench_kernels.py [--threads 2] [--k 576] [--n 1536]

One-node graphs in one process, the same random input for each: MatMulNBits (4-bit blocks of 32, the int4 packages'
kernel) at accuracy level 4 (int8 activations, what slmdeploy builds) and 0 (float), MatMulNBits 8-bit blocks (the
int8 variant's), and DynamicQuantizeMatMul (per-channel int8 weights, one activation scale per tensor: onnxruntime's
classic dynamic quantization, whose QGEMM uses VNNI and AMX where the CPU has them). Prints the best of 3 rounds of
30 runs per cell in milliseconds, and each kernel's time per row relative to its one-row time. The default shape is
the demo SmolLM2's gate/up projection. docs/bytes-per-token.md section 6 reads these figures.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

ROWS = (1, 2, 4, 8, 16, 64, 256)
ROUNDS, RUNS = 3, 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=576, help="input features (a multiple of 32)")
    parser.add_argument("--n", type=int, default=1536, help="output features")
    args = parser.parse_args()
    kernels = {
        "MatMulNBits 4-bit, level 4": nbits(args, bits=4, level=4),
        "MatMulNBits 4-bit, level 0": nbits(args, bits=4, level=0),
        "MatMulNBits 8-bit, level 4": nbits(args, bits=8, level=4),
        "DynamicQuantizeMatMul int8": dynamic_int8(args),
    }
    import numpy as np

    rng = np.random.default_rng(0)
    print(f"[{args.k} -> {args.n}], {args.threads} threads; ms (best of {ROUNDS} x {RUNS}); x: per row, vs 1 row")
    print(f"{'kernel':30s}" + "".join(f"{rows:>16d}" for rows in ROWS))
    for name, session in kernels.items():
        times = [timed(session, rng.random((rows, args.k), dtype=np.float32)) for rows in ROWS]
        cells = "".join(f"{t * 1000:9.3f} {t / times[0] / rows:5.2f}x" for t, rows in zip(times, ROWS, strict=True))
        print(f"{name:30s}{cells}")


def nbits(args: argparse.Namespace, bits: int, level: int) -> Any:
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    blocks = args.k // 32
    weights = rng.integers(0, 255, (args.n, blocks, 32 * bits // 8), dtype=np.uint8)
    scales = rng.random(args.n * blocks, dtype=np.float32) / 100
    node = helper.make_node(
        "MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=args.k, N=args.n, bits=bits, block_size=32,
        accuracy_level=level,
    )  # fmt: skip
    return session(args, node, [numpy_helper.from_array(weights, "B"), numpy_helper.from_array(scales, "S")])


def dynamic_int8(args: argparse.Namespace) -> Any:
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)
    weights = rng.integers(-127, 127, (args.k, args.n), dtype=np.int8)
    scales = rng.random(args.n, dtype=np.float32) / 100
    node = helper.make_node("DynamicQuantizeMatMul", ["A", "B", "S"], ["Y"], domain="com.microsoft")
    return session(args, node, [numpy_helper.from_array(weights, "B"), numpy_helper.from_array(scales, "S")])


def session(args: argparse.Namespace, node: Any, initializers: list[Any]) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node], "kernel", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, args.k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, args.n])], initializers,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def timed(session: Any, rows: Any) -> float:
    session.run(None, {"A": rows})
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(RUNS):
            session.run(None, {"A": rows})
        best = min(best, (time.perf_counter() - started) / RUNS)
    return best


if __name__ == "__main__":
    main()
