"""`slmdeploy serve` with ``[serve] ray = true`` and ``autoscale = "1:2"`` on a three-node `ray.cluster_utils.Cluster`
on this machine: one replica when idle, two under a bounded load (more requests than the engine's batch), back to
one after it, every request answered meanwhile: the streams running while a replica is removed end whole (its rows
drain before it stops)."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import threading
import time

import httpx
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.serve", reason="the Ray Serve tests need the [ray-serve] extra")

from serving import ServerProcess, client

pytestmark = pytest.mark.ray

STORE_BYTES = 80 << 20
METRICS_EVERY_S = "0.5"
"""How often replicas and handles tell Ray Serve's autoscaler their queue (Ray's default, 10 s, would slow the test)."""
SCALED_S = 120  # at most, for each change of the replica count (polled)
CLIENTS = 6  # three times the batch of 2: the queue is long enough to scale up
ANSWER_TOKENS = 1500
LONG_TOKENS = 8000  # a stream of several seconds: one is always running on each replica as one is removed
LONG_CLIENTS = 2
SERVE_TABLE = """
[serve]
ray = true
autoscale = "1:2"
max_batch = 2
upscale_delay = 1.0
downscale_delay = 2.0
"""


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    fast = {
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": METRICS_EVERY_S,
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": METRICS_EVERY_S,
    }
    before = {name: os.environ.get(name) for name in fast}
    os.environ.update(fast)  # the nodes' processes inherit them as they start
    try:
        started = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE_BYTES},
        )
        for _ in range(2):
            started.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
        started.wait_for_nodes()
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    yield started
    started.shutdown()


@pytest.fixture(scope="module")
def scaling_project(tiny_serving_project, tmp_path_factory):
    """A copy of the tiny project (its cache with it) whose ``[serve]`` table asks for Ray and autoscaling."""
    project = tmp_path_factory.mktemp("scaling") / "project"
    shutil.copytree(tiny_serving_project, project, ignore=shutil.ignore_patterns("serve-*.log"))
    with (project / "slmdeploy.toml").open("a") as file:
        file.write(SERVE_TABLE)
    return project


def replica_count(server):
    return len(httpx.get(f"{server.url}/health", timeout=10).json()["replicas"])


def wait_for_count(server, count):
    deadline = time.monotonic() + SCALED_S
    while time.monotonic() < deadline:
        if replica_count(server) == count:
            return
        time.sleep(0.25)
    pytest.fail(f"the server did not reach {count} replicas in {SCALED_S} s (it has {replica_count(server)})")


def keep_asking(server, stop, tokens, stream=False):
    """Requests of exactly `tokens` tokens one after another until `stop`; the tokens of each answer."""
    answered = []
    while not stop.is_set():
        request = {"model": "tiny-int4", "messages": [{"role": "user", "content": "hello"}], "max_tokens": tokens,
                   "extra_body": {"min_tokens": tokens}}  # fmt: skip
        if stream:
            chunks = list(client(server).chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}))  # fmt: skip
            assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
            answered.append(chunks[-1].usage.completion_tokens)
        else:
            answered.append(client(server).chat.completions.create(**request).usage.completion_tokens)
    return answered


def under_load(server, clients, tokens, until_count, stream=False):
    """`clients` asking all along until the server reports `until_count` replicas; every answer's tokens."""
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        load = [pool.submit(keep_asking, server, stop, tokens, stream) for _ in range(clients)]
        try:
            wait_for_count(server, until_count)
        finally:
            stop.set()
        return [answered for done in load for answered in done.result(timeout=SCALED_S)]


def test_replicas_follow_the_queue_from_one_to_two_and_back(cluster, scaling_project):
    server = ServerProcess(scaling_project, "--address", cluster.address, "--threads", "1")
    try:
        wait_for_count(server, 1)
        answered = under_load(server, CLIENTS, ANSWER_TOKENS, until_count=2)
        assert answered and set(answered) == {ANSWER_TOKENS}  # none failed while a replica was added
        # two long streams all along, fewer than the batch: one replica is enough, and the one removed is draining one
        streamed = under_load(server, LONG_CLIENTS, LONG_TOKENS, until_count=1, stream=True)
        assert streamed and set(streamed) == {LONG_TOKENS}  # no stream was cut by the scale-down
    finally:
        assert server.stop() == 0, server.output()
