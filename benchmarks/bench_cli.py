"""Start-up and no-op rebuild times of the CLI: run by ``nox -s bench-cli``.

- ``slmdeploy --help``: median wall time of `--repeats` runs (the target: well under half a second).
- A project whose source weighs `--source-mb` MB (random bytes) built through the core with the fake stage plugins
  of the unit tests: the first build hashes the weights; a no-op rebuild must not (target: about a second).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = """\
[project]
name = "bench"

[source]
path = "model"

[convert]
plugin = "copy"

[quantize]
plugin = "fake"
precision = ["int4", "int8"]

[template]
family = "fakefam"
"""


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def median_of(command: list[str], repeats: int) -> tuple[float, list[float]]:
    runs = [seconds(command) for _ in range(repeats)]
    return statistics.median(runs), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--source-mb", type=int, default=512)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "slmdeploy"]
    help_median, help_runs = median_of([*cli, "--help"], args.repeats)
    print(
        f"slmdeploy --help: median {help_median * 1000:.0f} ms over {args.repeats} runs "
        f"(min {min(help_runs) * 1000:.0f}, max {max(help_runs) * 1000:.0f})"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as temporary:
        project = Path(temporary)
        (project / "slmdeploy.toml").write_text(PROJECT, encoding="utf-8")
        shutil.copy(ROOT / "tests" / "fakeplugins.py", project / "slmdeploy_plugins.py")
        (project / "model").mkdir()
        (project / "model" / "config.json").write_text('{"model_type": "fake", "architectures": ["Fake"]}')
        with (project / "model" / "weights.bin").open("wb") as weights:
            for _ in range(args.source_mb):
                weights.write(os.urandom(1 << 20))
        build = [*cli, "-C", str(project), "--plain", "build"]
        first = seconds(build)
        noop_median, noop_runs = median_of(build, max(3, args.repeats // 2))
        plan_median, _ = median_of([*cli, "-C", str(project), "plan"], max(3, args.repeats // 2))
    print(f"first build ({args.source_mb} MB source, hashed once): {first:.2f} s")
    print(
        f"no-op rebuild: median {noop_median:.2f} s over {len(noop_runs)} runs "
        f"(ratio to the first build: {noop_median / first:.3f})"
    )
    print(f"slmdeploy plan on the built project: median {plan_median:.2f} s")


if __name__ == "__main__":
    main()
