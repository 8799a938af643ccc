"""Building a matrix of fine-tunes on a real multi-node Ray cluster on this machine (``pytest -m ray``).

`ray.cluster_utils.Cluster` starts a head node (no CPUs: it holds the driver's helpers, as Ray advises for big
clusters) and two worker nodes of one CPU each, all on the loopback address. Every build runs the real CLI in
a child process, with tiny random-weight llama models and tiny LoRA adapters made here with PEFT.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Ray's single-machine mode (every node on 127.0.0.1, nothing on another address), set before Ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="the Ray tests need the [ray] extra")

from slmdeploy.testing.models import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.ray

STORE_BYTES = 80 << 20
TIMING = {"duration_s", "queued_s", "node", "created", "built_at", "cached"}
PROJECT = """\
[project]
name = "tiny"

[source]
path = "{base}"
adapter = [{adapters}]

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
precision = [{precisions}]

[template]
family = "auto"
"""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    started = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE_BYTES},
    )
    for _ in range(2):
        started.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
    started.wait_for_nodes()
    yield started
    started.shutdown()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The shared file system: here a folder that every node of the cluster (one machine) sees at one path."""
    folder = tmp_path_factory.mktemp("shared")
    base = make_tiny_model(folder / "base", "llama")
    for seed, name in enumerate(("support", "sales"), start=1):
        make_adapter(base, folder / "adapters" / name, seed)
    make_adapter(make_tiny_model(folder / "phi3", "phi3"), folder / "adapters" / "phi3", 3, ("qkv_proj",))
    return folder


def make_adapter(base, folder, seed, targets=("q_proj", "v_proj")):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # r=8: a merge whose float sums differ with the thread count (Ray sets OMP_NUM_THREADS for its tasks)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)


def project(folder: Path, shared: Path, adapters=("support", "sales"), precisions=("int4", "int8"), cache=None):
    folder.mkdir(parents=True)
    text = PROJECT.format(
        base=shared / "base",
        adapters=", ".join(f'"{shared / "adapters" / name}"' for name in adapters),
        precisions=", ".join(f'"{precision}"' for precision in precisions),
    )
    if cache is not None:
        text += f'\n[build]\nexecutor = "ray"\ncache_dir = "{cache}"\n'
    (folder / "slmdeploy.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def slmdeploy(folder: Path, *args: str, **popen) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "slmdeploy", "-C", str(folder), "--plain", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    child = slmdeploy(folder, *args)
    stdout, stderr = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def model_files(folder: Path) -> dict[str, bytes]:
    return {str(file.relative_to(folder)): file.read_bytes() for file in sorted(folder.rglob("*")) if file.is_file()}


def without_timing(manifest: dict) -> dict:
    stages = [{key: value for key, value in stage.items() if key not in TIMING} for stage in manifest["stages"]]
    return {**{key: value for key, value in manifest.items() if key not in TIMING}, "stages": stages}


def complete_entries(cache: Path) -> list[str]:
    """Every folder in the cache is a whole entry: its record, and the output the record's digest covers."""
    from slmdeploy.execute.cache import Store, output_digest
    from slmdeploy.plan.digests import DigestCache

    store = Store(cache.parent, cache.parent)
    names = sorted(folder.name for folder in cache.iterdir())
    for name in names:
        entry = store.get(name)
        assert entry is not None, f"{name} has no readable entry.json"
        assert output_digest(entry.out, entry.record["artifact"], DigestCache()) == entry.output_digest
    return names


def test_the_matrix_on_the_cluster_is_the_local_build(cluster, shared, tmp_path):
    variants = ["support-int4", "support-int8", "sales-int4", "sales-int8"]
    local = project(tmp_path / "local", shared)
    assert "matrix: adapter (support, sales) x precision (int4, int8) = 4 variants" in run(local, "plan").stdout
    built = run(local, "build", "-j", "2")
    assert built.returncode == 0, built.stderr
    on_ray = project(tmp_path / "ray", shared, cache=shared / "cache-matrix")
    built = run(on_ray, "build", "--address", cluster.address)
    assert built.returncode == 0, built.stderr
    assert re.search(r"support-int4, support-int8: convert \(olive\) on node \w{8} \(127\.0\.0\.1\)", built.stderr)
    nodes = set()
    for variant in variants:
        here, there = local / "build" / variant, on_ray / "build" / variant
        assert model_files(here / "model") == model_files(there / "model"), variant
        manifest = json.loads((there / "manifest.json").read_text())
        assert without_timing(json.loads((here / "manifest.json").read_text())) == without_timing(manifest)
        nodes |= {stage["node"] for stage in manifest["stages"]}
        assert all(stage["queued_s"] >= 0 and stage["duration_s"] > 0 for stage in manifest["stages"])
    assert len(nodes) >= 2, nodes
    assert len(complete_entries(shared / "cache-matrix" / "cache")) == 10  # 2 conversions, 4 quantized, 4 packages

    again = run(on_ray, "build", "--address", cluster.address)
    assert again.returncode == 0, again.stderr
    assert ": running" not in again.stderr
    for variant in variants:
        assert f"{variant}: up to date (0 run, 3 cached)" in again.stdout


def test_a_node_lost_mid_step_is_retried_elsewhere_and_leaves_no_partial_entry(cluster, shared, tmp_path):
    cache = shared / "cache-lost"
    folder = project(tmp_path / "lost", shared, adapters=("support",), precisions=("int4",), cache=cache)
    child = slmdeploy(folder, "build", "--address", cluster.address)
    lines, match = [], None
    for line in child.stderr:  # ends when the build does: the line is awaited with no fixed wait
        lines.append(line)
        match = match or re.search(r"convert \(olive\) on node (\w{8}) .*: running", line)
        if match and re.search(r"convert \(olive\) on node .*: exporting \w+ to ONNX", line):
            break  # the conversion is under way in its worker process on that node
    assert match, "".join(lines)
    (lost,) = [node for node in cluster.worker_nodes if node.node_id.startswith(match.group(1))]
    cluster.remove_node(lost)
    stdout, stderr = child.communicate(timeout=600)
    cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)  # for the tests after this one
    stderr = "".join(lines) + stderr
    assert child.returncode == 0, stderr
    assert "its node was lost; running again on node" in stderr
    assert "support-int4: built (3 run, 0 cached)" in stdout
    assert len(complete_entries(cache / "cache")) == 3
    assert not list((cache / "tmp").glob("*")) if (cache / "tmp").exists() else True
    manifest = json.loads((folder / "build" / "support-int4" / "manifest.json").read_text())
    assert manifest["stages"][0]["node"] != f"node {match.group(1)} (127.0.0.1)"


def test_a_step_that_fails_on_its_own_is_not_retried_and_reads_as_locally(cluster, shared, tmp_path):
    local = project(tmp_path / "local", shared, adapters=("phi3",), precisions=("int4",))
    on_ray = project(tmp_path / "ray", shared, adapters=("phi3",), precisions=("int4",), cache=shared / "cache-bad")
    here, there = run(local, "build"), run(on_ray, "build", "--address", cluster.address)
    assert here.returncode == there.returncode == 2
    error = "the LoRA adapter {} targets modules qkv_proj that the base model (llama) does not have"
    assert error.format(shared / "adapters" / "phi3") in " ".join(there.stderr.split())
    same = {str(shared / "cache-bad"): "<cache>", str(local / ".slmdeploy"): "<cache>"}
    assert last_error(there.stderr, same) == last_error(here.stderr, same)
    assert there.stderr.count(": running") == 1


def last_error(stderr: str, replace: dict[str, str]) -> str:
    text = stderr[stderr.rindex("error: ") :]
    for old, new in replace.items():
        text = text.replace(old, new)
    return " ".join(text.split())


def test_an_address_with_no_cluster_is_a_clear_error(shared, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    folder = project(tmp_path / "nowhere", shared, cache=shared / "cache-nowhere")
    result = run(folder, "build", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert f"error: --address: no Ray cluster answers at 127.0.0.1:{port} (Connection refused)" in text
    assert "ray start --head" in text and "Traceback" not in text
    assert not (folder / "build").exists()
