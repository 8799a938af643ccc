"""`slmdeploy serve --ray` on a three-node `ray.cluster_utils.Cluster` on this machine (loopback only): two replicas
of the tiny model on different nodes behind Ray Serve. The single-machine server's checks run against both servers
(the `server` fixture is parametrized); greedy answers are the same on both; a replica whose worker is killed, or
whose node is removed, mid-stream ends that stream with an error chunk, and the next requests are answered by the
other."""

from __future__ import annotations

import os
import signal
import time

import httpx
import openai
import pytest

# Ray's single-machine mode (every node on 127.0.0.1), set before Ray is imported; the child servers inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.serve", reason="the Ray Serve tests need the [ray-serve] extra")

from test_serve import (
    test_a_streamed_answer_is_the_plain_one_and_ends_with_usage,
    test_errors_in_openai_shape,
    test_logprobs_of_each_token_and_its_likeliest_alternatives,
    test_max_completion_tokens_ends_with_length,
    test_metrics_count_requests_tokens_and_latency,
    test_models_health_and_a_plain_answer_with_usage,
    test_stop_text_is_not_returned,
    test_the_same_seed_gives_the_same_answer_and_min_tokens_holds_off_the_end,
    test_unknown_paths_answer_in_the_same_shape,
)
from test_serve_clients import test_legacy_completions_plain_streamed_and_from_token_ids
from test_serve_guard import (
    BODY_LIMIT,
    ORIGIN,
    test_a_body_past_the_limit_is_413_before_it_is_read,
    test_a_cross_origin_text_plain_post_is_415_and_cors_is_only_for_named_origins,
    test_developer_is_system_and_parts_that_are_not_text_are_refused,
    test_fields_clients_send_that_change_nothing_are_accepted,
    test_many_requests_at_once_are_all_answered,
    test_the_host_header_must_name_this_server,
)
from test_serve_tools import (
    QUESTION,
    WEATHER,
    test_a_named_function_is_always_called_with_valid_arguments,
    test_a_streamed_call_is_the_plain_call,
    test_auto_answers_a_call_or_text_never_a_broken_call,
    test_none_answers_text_and_a_conversation_carries_calls_and_results,
    test_required_calls_one_of_the_tools,
)

from serving import TINY_CONTEXT, ServerProcess, client

pytestmark = pytest.mark.ray

REUSED = (
    test_a_streamed_answer_is_the_plain_one_and_ends_with_usage, test_errors_in_openai_shape,
    test_logprobs_of_each_token_and_its_likeliest_alternatives, test_max_completion_tokens_ends_with_length,
    test_metrics_count_requests_tokens_and_latency, test_models_health_and_a_plain_answer_with_usage,
    test_stop_text_is_not_returned, test_the_same_seed_gives_the_same_answer_and_min_tokens_holds_off_the_end,
    test_unknown_paths_answer_in_the_same_shape, test_legacy_completions_plain_streamed_and_from_token_ids,
    test_a_body_past_the_limit_is_413_before_it_is_read,
    test_a_cross_origin_text_plain_post_is_415_and_cors_is_only_for_named_origins,
    test_developer_is_system_and_parts_that_are_not_text_are_refused,
    test_fields_clients_send_that_change_nothing_are_accepted, test_many_requests_at_once_are_all_answered,
    test_the_host_header_must_name_this_server, test_a_named_function_is_always_called_with_valid_arguments,
    test_a_streamed_call_is_the_plain_call, test_auto_answers_a_call_or_text_never_a_broken_call,
    test_none_answers_text_and_a_conversation_carries_calls_and_results, test_required_calls_one_of_the_tools,
)  # fmt: skip
"""Collected here as this module's tests (pytest collects what a test module imports), with its `server`."""
STORE_BYTES = 80 << 20
FLAGS = ("--threads", "1", "--max-body-bytes", str(BODY_LIMIT), "--allowed-host", "my.box", "--cors-origin", ORIGIN)
RECOVER_S = 120  # at most, for Ray Serve to replace a killed replica (polled)
LONG = TINY_CONTEXT - 64


@pytest.fixture(scope="module")
def cluster():
    """A head node with no CPUs (it holds Ray Serve's controller, proxy and the front) and two nodes of one CPU:
    one replica fits on each."""
    from ray.cluster_utils import Cluster

    started = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE_BYTES},
    )
    try:
        for _ in range(2):
            started.add_node(num_cpus=1, object_store_memory=STORE_BYTES)
        started.wait_for_nodes()
        yield started
    finally:
        started.shutdown()


@pytest.fixture(scope="module")
def servers(tiny_serving_project, cluster):
    """The single-machine server and the Ray one, with the same limits, both up for the whole module."""
    local = ServerProcess(tiny_serving_project, *FLAGS)
    try:
        on_ray = ServerProcess(tiny_serving_project, *FLAGS, "--ray", "--address", cluster.address, "--replicas", "2")
    except BaseException:
        local.stop()
        raise
    yield {"one machine": local, "ray": on_ray}
    codes = [running.stop() for running in (local, on_ray)]
    assert codes == [0, 0], on_ray.output()


@pytest.fixture(params=["one machine", "ray"])
def server(request, servers):
    return servers[request.param]


def replicas(server):
    return httpx.get(f"{server.url}/health", timeout=10).json().get("replicas", [])


def wait_for_replicas(server, count, timeout_s=RECOVER_S, without=None):
    """The `count` replicas the server reports once they are that many (and `without` is not among them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = replicas(server)
        if len(found) == count and without not in {replica["replica"] for replica in found}:
            return found
        time.sleep(0.25)
    pytest.fail(f"the server did not report {count} replicas in {timeout_s} s: {replicas(server)}")


def ask(server, **fields):
    request = {"model": "tiny-int4", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 24,
               "temperature": 0, **fields}  # fmt: skip
    return client(server).chat.completions.create(**request)


def test_two_replicas_on_two_nodes(servers):
    found = wait_for_replicas(servers["ray"], 2)
    assert len({replica["node"] for replica in found}) == 2
    assert {replica["model"] for replica in found} == {"tiny-int4"}


@pytest.mark.parametrize(
    "fields",
    [
        {"extra_body": {"min_tokens": 24}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}]},
        {"messages": QUESTION, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 256},
    ],
)
def test_greedy_answers_are_the_same_as_on_one_machine(servers, fields):
    here, there = (ask(servers[name], **fields).choices[0] for name in ("one machine", "ray"))
    assert there.message.content == here.message.content and there.finish_reason == here.finish_reason
    assert [call.function for call in there.message.tool_calls or ()] == [
        call.function for call in here.message.tool_calls or ()
    ]  # the same calls (each call's id is its own)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       ask(servers["ray"], stream=True, **fields) if chunk.choices)  # fmt: skip
    assert streamed == (here.message.content or "")


def test_a_replica_lost_mid_stream_ends_its_stream_with_an_error_and_the_next_20_succeed(servers):
    server = servers["ray"]
    wait_for_replicas(server, 2)
    chunks = iter(ask(server, stream=True, max_tokens=LONG, extra_body={"min_tokens": LONG}))
    next(chunks)
    serving = next(replica for replica in wait_busy(server) if replica["active"] > 0)
    os.kill(serving["pid"], signal.SIGKILL)
    assert_lost_then_answered(server, chunks)
    restarted = wait_for_replicas(server, 2, without=serving["replica"])  # Ray Serve replaced the lost replica
    assert len({replica["node"] for replica in restarted}) == 2


def assert_lost_then_answered(server, chunks):
    """The stream ends with the error chunk of a lost replica, and the next 20 requests are all answered in full."""
    with pytest.raises(openai.APIError) as raised:
        for _ in chunks:
            pass
    assert "replica answering this request was lost" in str(raised.value)
    answers = [ask(server, max_tokens=4, extra_body={"min_tokens": 4}) for _ in range(20)]
    assert [answer.usage.completion_tokens for answer in answers] == [4] * 20


def wait_busy(server, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = replicas(server)
        if any(replica["active"] > 0 for replica in found):
            return found
        time.sleep(0.05)
    pytest.fail("no replica reported the running request")


def test_a_node_lost_mid_stream_ends_its_stream_with_an_error_and_the_next_20_succeed(servers, cluster):
    server = servers["ray"]
    wait_for_replicas(server, 2)
    chunks = iter(ask(server, stream=True, max_tokens=LONG, extra_body={"min_tokens": LONG}))
    next(chunks)
    serving = next(replica for replica in wait_busy(server) if replica["active"] > 0)
    node = next(node for node in cluster.worker_nodes if node.node_id == serving["node"])
    cluster.remove_node(node, allow_graceful=False)
    assert_lost_then_answered(server, chunks)
    cluster.add_node(num_cpus=1, object_store_memory=STORE_BYTES)  # room for Ray Serve's replacement
    restarted = wait_for_replicas(server, 2, without=serving["replica"])
    assert serving["node"] not in {replica["node"] for replica in restarted}
