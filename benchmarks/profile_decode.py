"""Where a decode step's time goes: onnxruntime's profiler on a GenAI package, kernel time per operator type.

    python benchmarks/profile_decode.py PACKAGE [--threads 2] [--prompt 16] [--steps 64]

Runs the package (a copy of its genai_config.json with ``enable_profiling`` set; the weights are linked, not
copied) on `--prompt` tokens of ``benchmarks/heldout.txt``, then `--steps` greedy tokens, and prints the prefill
time, the median step time, and each operator type's kernel time per decode step (the first two runs, prefill and
the first token, left out). Profiling adds a little time to every kernel call: read the shares, not the totals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

HELDOUT = Path(__file__).resolve().parent / "heldout.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slmdeploy-profile-") as work:
        trace = profile(args.package, Path(work), args.threads, args.prompt, args.steps)
        report(json.loads(trace.read_text(encoding="utf-8")))


def profile(package: Path, work: Path, threads: int, prompt: int, steps: int) -> Path:
    """Run the package with profiling on; the trace file onnxruntime wrote when the session closed."""
    import gc

    import numpy as np
    import onnxruntime_genai as og

    linked = work / "package"
    linked.mkdir()
    for item in package.iterdir():
        if item.name != "genai_config.json":
            (linked / item.name).symlink_to(item.resolve())
    config = json.loads((package / "genai_config.json").read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update({"enable_profiling": str(work / "trace"), "intra_op_num_threads": threads})
    (linked / "genai_config.json").write_text(json.dumps(config), encoding="utf-8")
    model = og.Model(str(linked))
    ids = list(og.Tokenizer(model).encode(HELDOUT.read_text(encoding="utf-8")))
    while len(ids) < prompt:
        ids += ids
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=prompt + steps, min_length=prompt + steps)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(ids[:prompt], dtype=np.int32))
    for _ in range(steps - 1):
        generator.generate_next_token()
    del generator, model  # the session writes its trace when it closes
    gc.collect()
    return sorted(work.glob("trace*.json"))[-1]


def report(events: list[dict[str, Any]]) -> None:
    runs = [event for event in events if event.get("name") == "model_run"]
    steps = runs[2:]
    step_ms = statistics.median(run["dur"] for run in steps) / 1e3
    print(f"prefill {runs[0]['dur'] / 1e3:.1f} ms; median decode step {step_ms:.2f} ms")
    by_type: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= steps[0]["ts"]:
            kind = event["args"]["op_name"]
            by_type[kind] = by_type.get(kind, 0.0) + event["dur"]
    total = sum(by_type.values())
    for kind, spent in sorted(by_type.items(), key=lambda item: -item[1]):
        print(f"{kind:34s} {spent / len(steps) / 1e3:7.3f} ms/step {100 * spent / total:5.1f}%")


if __name__ == "__main__":
    main()
