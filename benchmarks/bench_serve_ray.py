"""`slmdeploy serve --ray` against the single-machine `slmdeploy serve`, in one run, loopback only.

    python benchmarks/bench_serve_ray.py [--project DIR] [--max-tokens 64] [--rounds 2]

1. Starts a `ray.cluster_utils.Cluster` here: a head node with no CPUs (Ray Serve's controller, HTTP proxy and the
   front) and two nodes of one CPU, each started pinned to its own core (its raylet and workers inherit the
   affinity), so each replica (``--threads 1``) has a core of its own.
2. Starts the single-machine server pinned to the first core (``--threads 1``, the same core as the first
   replica's node) and the Ray server with 1 replica; drives both with bench_serve's bounded load (8 and 16 staggered
   clients, `rounds` streamed seeded requests each, exactly `max_tokens` tokens per answer), level by level, one
   server and then the other. Then the Ray server again with 2 replicas (one on each node), the same levels.
3. Prints aggregate tokens/s per server and level, then the ratios: the Ray path's overhead at 1 replica (the
   single-machine server's tokens/s over the Ray server's; target at most 1.15x) and 2 replicas over 1. On a
   2-core machine the head node's processes (proxy, front) share the replicas' cores: the overhead includes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench_serve import free_port, load, print_table, wait_until_up  # noqa: E402

CLIENTS = (8, 16)
STORE_BYTES = 80 << 20
MAX_BATCH = "8"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=ROOT, help="A built project (default: the demo, `nox -s demo`)."
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="Requests per client at each level.")
    args = parser.parse_args()
    model = served_model(args.project)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    with cluster() as address:
        single = ["--threads", "1", "--max-batch", MAX_BATCH]
        on_ray = [*single, "--ray", "--address", address]
        with server(args.project, single, core=0) as local, server(args.project, [*on_ray, "--replicas", "1"]) as one:
            measure({"one machine": local, "ray, 1 replica": one}, model, args, results)
        with server(args.project, [*on_ray, "--replicas", "2"]) as two:
            measure({"ray, 2 replicas": two}, model, args, results)
    report(results, args)


def served_model(project: Path) -> str:
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.serve.models import project_specs

    return project_specs(project / BUILD_DIR, [])[0].name


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Head (no CPUs) and two one-CPU nodes, node i started with only core i (its processes inherit it)."""
    from ray.cluster_utils import Cluster

    everything = os.sched_getaffinity(0)
    started = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                              "object_store_memory": STORE_BYTES},
    )  # fmt: skip
    try:
        for core in sorted(everything)[:2]:
            os.sched_setaffinity(0, {core})
            try:
                started.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
            finally:
                os.sched_setaffinity(0, everything)
        started.wait_for_nodes()
        yield started.address
    finally:
        started.shutdown()


@contextlib.contextmanager
def server(project: Path, flags: list[str], core: int | None = None) -> Iterator[str]:
    """`slmdeploy serve FLAGS` on a free loopback port (pinned to `core` when given), up and warmed; stopped after."""
    port = free_port()
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "serve", *flags, "--port", str(port)]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def measure(servers: dict[str, str], model: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Each level on each server in turn (a warm-up request first), so a drifting machine treats them alike."""
    for url in servers.values():
        asyncio.run(load(url, model, {"min_tokens": None}, 1, 1, args.max_tokens))
    for level in CLIENTS:
        for name, url in servers.items():
            print(f"{name}: {level} clients, {args.rounds * level} requests", flush=True)
            row = asyncio.run(load(url, model, {"min_tokens": None}, level, args.rounds, args.max_tokens))
            results.setdefault(name, {})[level] = row


def report(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\nbench-serve-ray: 1 thread per engine, seeded sampling, {args.max_tokens} tokens per answer, "
          f"{args.rounds} requests per client; project {args.project}")  # fmt: skip
    print_table(results)
    local, one, two = results["one machine"], results["ray, 1 replica"], results["ray, 2 replicas"]
    for level in CLIENTS:
        overhead = local[level]["aggregate_tps"] / one[level]["aggregate_tps"]
        scaling = two[level]["aggregate_tps"] / one[level]["aggregate_tps"]
        print(f"{level} clients: one machine / ray at 1 replica: {overhead:.2f}x (target at most 1.15x); "
              f"ray 2 replicas / 1 replica: {scaling:.2f}x")  # fmt: skip
    failed = sum(row["failed"] for levels in results.values() for row in levels.values())
    print(f"failed requests: {failed} (target 0)")


if __name__ == "__main__":
    main()
