"""Where a serving step's time goes: onnxruntime's profiler on the engine's own decoder, kernel time per operator.

    python benchmarks/profile_engine.py PACKAGE [--threads 2] [--rows 8] [--context 300] [--chunk 256] [--steps 6]

Runs `slmdeploy.serve.decoder.Decoder` as the engine does: `--rows` rows hold `--context` prompt tokens each (read
in chunks), then `--steps` mixed steps, each a `--chunk`-token prompt chunk on one more row followed by one decode
run of the `--rows` rows. Prints, for each kind of run, its median time and each operator type's share of its kernel
time. Profiling adds a little time to every kernel call: read the shares and the ratio of the two runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slmdeploy-profile-") as work:
        events, kinds = profile(args, Path(work) / "trace")
    report(events, kinds)


def profile(args: argparse.Namespace, prefix: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The profiler's events and, for each run in order, ``prefill`` or ``decode``."""
    import numpy as np

    from slmdeploy.serve.decoder import Decoder

    decoder = Decoder(args.package, args.rows + 1, args.threads, profile=str(prefix))
    rng = np.random.default_rng(0)
    kinds: list[str] = []
    for row in range(args.rows):
        ids = [int(token) for token in rng.integers(100, 10_000, args.context)]
        for start in range(0, args.context, args.chunk):
            decoder.prefill(row, ids[start : start + args.chunk], start)
            kinds.append("setup")
    lengths = [args.context] * args.rows
    newcomer = [int(token) for token in rng.integers(100, 10_000, args.chunk * args.steps)]
    for step in range(args.steps):
        decoder.prefill(args.rows, newcomer[step * args.chunk : (step + 1) * args.chunk], step * args.chunk)
        decoder.decode([5] * args.rows, lengths)
        lengths = [length + 1 for length in lengths]
        kinds += ["prefill", "decode"]
    trace = decoder.session.end_profiling()
    return json.loads(Path(trace).read_text(encoding="utf-8")), kinds


def report(events: list[dict[str, Any]], kinds: list[str]) -> None:
    runs = [event for event in events if event.get("name") == "model_run"]
    nodes = [event for event in events if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")]
    for kind in ("prefill", "decode"):
        chosen = [run for run, made in zip(runs, kinds, strict=True) if made == kind]
        by_type: dict[str, float] = {}
        for run in chosen:
            for node in nodes:
                if run["ts"] <= node["ts"] <= run["ts"] + run["dur"]:
                    by_type[node["args"]["op_name"]] = by_type.get(node["args"]["op_name"], 0.0) + node["dur"]
        total = sum(by_type.values())
        shares = ", ".join(f"{name} {100 * spent / total:.1f}%" for name, spent in sorted(by_type.items(),
                           key=lambda item: -item[1])[:5])  # fmt: skip
        print(f"{kind:8s} median {statistics.median(run['dur'] for run in chosen) / 1e3:8.1f} ms; {shares}")


if __name__ == "__main__":
    main()
