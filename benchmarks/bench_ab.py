"""Packages of one model side by side, interleaved in one process: an A/B of a representation change.

    python benchmarks/bench_ab.py SOURCE_HF_FOLDER PACKAGE [PACKAGE ...] [--rounds 3] [--threads N]

Every package is loaded once; each round measures each of them in turn (decode tokens/s after a 16- and a
1024-token prompt, the 1024-token prefill), so a neighbour's load on a shared machine falls on all of them alike;
the table gives medians and each figure's ratio to the first package's. Then the bytes one decode step reads
(`slmdeploy_evaluate.bound`) and the teacher-forced top-1 agreement and mean KL against the source in PyTorch
fp32 on ``benchmarks/heldout.txt`` (the same figures as ``bench_peers.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_peers  # the peers benchmark's runners, prompts and held-out texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the source model as a Hugging Face folder (tokenizer, fp32)")
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    parser.add_argument("--no-fidelity", action="store_true")
    args = parser.parse_args()
    from slmdeploy.plugin.genai import resolve_threads

    threads = resolve_threads(args.threads)
    runners = {folder: bench_peers.GenaiRunner(folder, threads) for folder in args.packages}
    speed = interleaved(runners, args.source, args.rounds)
    fidelity = {} if args.no_fidelity else heldout(runners, args.source)
    print_table(args.packages, speed, fidelity, threads, args.rounds)


def interleaved(runners: dict[Path, Any], source: Path, rounds: int) -> dict[Path, dict[str, float]]:
    short = bench_peers.prompt_ids(source, bench_peers.SHORT)
    long = bench_peers.prompt_ids(source, bench_peers.LONG)
    for runner in runners.values():
        runner.decode(short, 8)  # warm-up
    runs: dict[Path, list[dict[str, float]]] = {folder: [] for folder in runners}
    for round_index in range(rounds):
        for folder, runner in runners.items():
            at_short = runner.decode(short, bench_peers.NEW_TOKENS)
            at_long = runner.decode(long, bench_peers.NEW_TOKENS)
            runs[folder].append(
                {
                    "decode_short": at_short["decode_tokens_per_s"],
                    "decode_long": at_long["decode_tokens_per_s"],
                    "prefill_long_ms": at_long["prefill_ms"],
                }
            )
            print(f"  round {round_index + 1}: {folder}: {runs[folder][-1]}", flush=True)
    return {
        folder: {key: statistics.median(run[key] for run in found) for key in found[0]}
        for folder, found in runs.items()
    }


def heldout(runners: dict[Path, Any], source: Path) -> dict[Path, dict[str, float]]:
    import numpy as np

    from slmdeploy.plugin.fidelity import add_sums, fidelity_figures, fidelity_sums

    sequences = bench_peers.heldout_sequences(source)
    reference = bench_peers.TorchLogits(source)
    expected = [reference.logits(ids).astype(np.float32) for ids in sequences]
    found = {}
    for folder, runner in runners.items():
        sums = [
            fidelity_sums(want, runner.logits(ids).astype(np.float32), ids)
            for want, ids in zip(expected, sequences, strict=True)
        ]
        found[folder] = fidelity_figures(add_sums(sums))
    return found


def print_table(
    packages: list[Path],
    speed: dict[Path, dict[str, float]],
    fidelity: dict[Path, dict[str, float]],
    threads: int,
    rounds: int,
) -> None:
    from slmdeploy_evaluate.bound import package_step_bytes

    first = speed[packages[0]]
    print(f"\nmedians of {rounds} interleaved rounds, {threads} threads; (ratio to {packages[0]})")
    print("| package | size MB | MB/step @16 | decode @16 | decode @1024 | prefill 1024 ms | top-1 | mean KL |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in packages:
        figures = speed[folder]
        size = sum(file.stat().st_size for file in folder.rglob("*") if file.is_file()) / 1e6
        step = package_step_bytes(folder).at(bench_peers.SHORT + bench_peers.NEW_TOKENS / 2) / 1e6
        quality = fidelity.get(folder, {})
        cells = [
            f"{size:.1f}",
            f"{step:.1f}",
            f"{figures['decode_short']:.1f} ({figures['decode_short'] / first['decode_short']:.2f}x)",
            f"{figures['decode_long']:.1f} ({figures['decode_long'] / first['decode_long']:.2f}x)",
            f"{figures['prefill_long_ms']:.0f} ({first['prefill_long_ms'] / figures['prefill_long_ms']:.2f}x)",
            f"{quality.get('top1_agreement', float('nan')):.3f}",
            f"{quality.get('mean_kl', float('nan')):.4f}",
        ]
        print(f"| {folder.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
