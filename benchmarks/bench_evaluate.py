"""The full evaluation of the demo project, measured anew: build it in a temporary copy, print its report.

    python benchmarks/bench_evaluate.py [--keep]

The copy has its own stage cache and Foundry Local cache, so nothing is reused from earlier builds and nothing
is registered in the user's Foundry Local. The figures are medians of the repeats the benchmark evaluator makes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="slmdeploy-bench-"))
    project = work / "demo"
    project.mkdir()
    shutil.copy(ROOT / "slmdeploy.toml", project)
    shutil.copytree(ROOT / "evaluation", project / "evaluation")
    env = {**os.environ, "SLMDEPLOY_FOUNDRY_CACHE": str(work / "foundry")}
    started = time.monotonic()
    build = subprocess.run(["slmdeploy", "--plain", "-C", str(project), "build"], env=env, check=False)
    elapsed = time.monotonic() - started
    print(f"\nbuild: exit {build.returncode} after {elapsed:.0f} s (convert, quantize, evaluate, register)")
    subprocess.run(["slmdeploy", "-C", str(project), "report"], env=env, check=True)
    print()
    for report_file in sorted((project / "build").glob("*/report.json")):
        ratios(report_file)
    if "--keep" in sys.argv:
        print(f"\nkept: {work}")
    else:
        shutil.rmtree(work)
    sys.exit(build.returncode)


def ratios(report_file: Path) -> None:
    """Per variant, the speed-up and memory ratio at each prompt length, measured in the same run."""
    bench = json.loads((report_file.parent / "benchmark.json").read_text(encoding="utf-8"))
    if not bench["source"]:
        return
    print(f"{report_file.parent.name} vs the source in PyTorch fp32 (same run):")
    for package, source in zip(bench["package"]["lengths"], bench["source"]["lengths"], strict=True):
        speedup = package["decode_tokens_per_s"] / source["decode_tokens_per_s"]
        print(
            f"  {package['prompt_tokens']:>5} tokens: decode {package['decode_tokens_per_s']:6.1f} vs "
            f"{source['decode_tokens_per_s']:5.1f} tok/s ({speedup:.1f}x), "
            f"TTFT {package['ttft_ms']:6.1f} vs {source['ttft_ms']:6.1f} ms"
        )
    print(
        f"  peak RSS {bench['package']['peak_rss_mb']:.0f} vs {bench['source']['peak_rss_mb']:.0f} MB "
        f"({bench['package']['peak_rss_mb'] / bench['source']['peak_rss_mb']:.2f}x), "
        f"load {bench['package']['load_s']:.2f} vs {bench['source']['load_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
