"""`slmdeploy serve` on a tiny model's built project, driven by the real openai client: answers, streams, usage,
stop, seed, every error, 429 under overload, a client that leaves mid-stream, and shutdown with requests in flight."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time

import httpx
import openai
import pytest

from slmdeploy.testing import run_slmdeploy

from serving import TINY_CONTEXT as CONTEXT
from serving import ServerProcess, client

LONG = CONTEXT - 64  # tokens: the whole context after a short prompt, an answer still running when the test acts
QUEUED_WAIT_S = 60  # at most, for a request to reach the queue (polled: it usually takes milliseconds)


@pytest.fixture(scope="module")
def project(tiny_serving_project):
    return tiny_serving_project


@pytest.fixture(scope="module")
def server(project):
    """The server, one batch slot and one waiting place, so overload is easy to reach."""
    running = ServerProcess(project, "--threads", "1", "--max-batch", "1", "--max-queue", "1", "--timeout", "60")
    yield running
    assert running.stop() == 0, running.output()


def ask(server, **fields):
    request = {"model": "tiny-int4", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **fields}
    return client(server).chat.completions.create(**request)


def test_models_health_and_a_plain_answer_with_usage(server):
    assert [model.id for model in client(server).models.list()] == ["tiny-int4"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    answer = ask(server, max_tokens=6, temperature=0, extra_body={"min_tokens": 6})
    assert answer.object == "chat.completion" and answer.model == "tiny-int4"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.completion_tokens == 6
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_max_completion_tokens_ends_with_length(server):
    answer = ask(server, max_completion_tokens=3, temperature=0, extra_body={"min_tokens": 3},
                 messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}])  # fmt: skip
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_a_streamed_answer_is_the_plain_one_and_ends_with_usage(server):
    fields = {"temperature": 0, "extra_body": {"min_tokens": 8}}  # ask's max_tokens: exactly 8 tokens
    plain = ask(server, **fields).choices[0].message.content
    chunks = list(ask(server, **fields, stream=True, stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == plain
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_stop_text_is_not_returned(server):
    fields = {"temperature": 0, "max_tokens": 24, "extra_body": {"min_tokens": 24}}  # 24 tokens: text to cut
    whole = ask(server, **fields).choices[0].message.content
    assert len(whole) >= 6, whole
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
    cut = ask(server, **fields, stop=[stop, "never-seen-text"])
    assert cut.choices[0].message.content == whole[: whole.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprobs_of_each_token_and_its_likeliest_alternatives(server):
    answer = ask(server, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3, extra_body={"min_tokens": 5})
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 5
    for item in content:
        assert len(item.top_logprobs) == 3 and item.logprob <= 0
        assert item.top_logprobs[0].logprob == item.logprob  # greedy: the chosen token is the likeliest
        assert [top.logprob for top in item.top_logprobs] == sorted((top.logprob for top in item.top_logprobs),
                                                                     reverse=True)  # fmt: skip


def test_the_same_seed_gives_the_same_answer_and_min_tokens_holds_off_the_end(server):
    fields = {"temperature": 1.0, "seed": 7, "max_tokens": 40, "extra_body": {"min_tokens": 40}}
    first, again = ask(server, **fields), ask(server, **fields)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.completion_tokens == 40 and first.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
        (b'{"model": "tiny-int4", "messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n=1"),
        (b'{"model": "tiny-int4", "messages": [{"role": "user", "content": "hi"}], "best_of": 2}', 400, "'best_of'"),
        (
            b'{"model": "tiny-int4", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}',
            400,
            "needs tools",
        ),
        (b'{"model": "tiny-int4", "messages": []}', 400, "messages"),
        (b'{"model": "tiny-int4", "messages": [{"role": "tool", "content": "x"}]}', 400, "tool_call_id"),
        (b'{"model": "tiny-int4", "messages": [{"role": "robot", "content": "x"}]}', 400, "role"),
        (
            b'{"model": "tiny-int4", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
            400,
            "temperature",
        ),
        (b"[]", 400, "invalid"),
    ],
)
def test_errors_in_openai_shape(server, body, status, words):
    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"]
    assert "Traceback" not in response.text


def test_a_prompt_longer_than_the_context_says_both_lengths(server, project):
    with pytest.raises(openai.BadRequestError) as raised:
        ask(server, messages=[{"role": "user", "content": "word " * CONTEXT}])
    context = json.loads((project / "build" / "int4" / "model" / "genai_config.json").read_text())["search"][
        "max_length"
    ]
    assert re.search(
        rf"the prompt is \d+ tokens, and tiny-int4's context is {context} tokens", raised.value.body["message"]
    )


def test_unknown_paths_answer_in_the_same_shape(server):
    response = httpx.get(f"{server.url}/v2/nothing")
    assert response.status_code == 404 and "error" in response.json()


def test_overload_is_429_with_retry_after_and_a_client_that_leaves_frees_its_slot(server):
    running = ask(server, stream=True, max_tokens=LONG, temperature=0.8, top_p=0.9, extra_body={"min_tokens": LONG})
    next(iter(running))  # it holds the one batch slot
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: ask(server, max_tokens=2, extra_body={"min_tokens": 2}))  # the waiting place
        wait_until_queued(server, 1)
        with pytest.raises(openai.RateLimitError) as raised:
            ask(server, max_tokens=2)
        assert int(raised.value.response.headers["Retry-After"]) >= 1
        running.close()  # the client leaves mid-stream: its slot frees, and the waiting request runs
        assert waiting.result(timeout=60).usage.completion_tokens == 2
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'slmdeploy_requests_total{model="tiny-int4",status="429"}' in metrics
    assert 'slmdeploy_requests_total{model="tiny-int4",status="499"} 1.0' in metrics  # left before its end
    assert 'slmdeploy_requests_active{model="tiny-int4"} 0.0' in metrics


def wait_until_queued(server, depth):
    """Poll /metrics until `depth` requests wait for a batch slot (the queue's own count, not a guess in seconds)."""
    line = f'slmdeploy_queue_depth{{model="tiny-int4"}} {float(depth)}'
    deadline = time.monotonic() + QUEUED_WAIT_S
    while time.monotonic() < deadline:
        if line in httpx.get(f"{server.url}/metrics").text.splitlines():
            return
        time.sleep(0.02)
    pytest.fail(f"no request reached the queue in {QUEUED_WAIT_S} s")


def test_metrics_count_requests_tokens_and_latency(server):
    ask(server)
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        'slmdeploy_requests_total{model="tiny-int4",status="200"}',
        "slmdeploy_prompt_tokens_total",
        "slmdeploy_completion_tokens_total",
        "slmdeploy_time_to_first_token_seconds_bucket",
        "slmdeploy_request_latency_seconds_bucket",
        "slmdeploy_queue_depth",
    ):
        assert name in metrics


def test_an_api_key_is_checked_and_a_public_address_needs_one(project):
    refused = run_slmdeploy(project, "serve", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2 and "--api-key-env" in refused.stderr
    keyed = ServerProcess(
        project, "--threads", "1", "--api-key-env", "TEST_SERVE_KEY", env={"TEST_SERVE_KEY": "s3cret"}
    )
    try:
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            response = httpx.get(f"{keyed.url}/v1/models", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
        assert [model.id for model in client(keyed, "s3cret").models.list()] == ["tiny-int4"]
    finally:
        assert keyed.stop() == 0


def test_shutdown_ends_requests_in_flight_with_an_error_and_exits_cleanly(project):
    stopping = ServerProcess(project, "--threads", "1")
    stream = ask(stopping, stream=True, max_tokens=LONG, temperature=0.8, extra_body={"min_tokens": LONG})
    chunks = iter(stream)
    next(chunks)
    os.kill(stopping.process.pid, signal.SIGTERM)
    with pytest.raises(openai.APIError) as raised:
        for _ in chunks:
            pass
    assert "shutting down" in str(raised.value)
    assert stopping.stop() == 0


def test_a_request_past_its_timeout_ends_with_504_and_a_stream_with_an_error(project):
    """One row: the next request gets it, so a request that timed out stopped generating (its answer would have run
    for the whole context)."""
    hurried = ServerProcess(project, "--threads", "1", "--timeout", "1", "--max-batch", "1")
    try:
        with pytest.raises(openai.APIStatusError) as raised:
            ask(hurried, max_tokens=LONG, extra_body={"min_tokens": LONG})
        assert raised.value.status_code == 504 and "1 s limit" in raised.value.message
        # its one row was freed: a short request gets it at once (were the long answer still generating, this one
        # would wait behind it past its own 1 s limit)
        assert ask(hurried, max_tokens=2, extra_body={"min_tokens": 2}).usage.completion_tokens == 2
        with pytest.raises(openai.APIError, match="1 s limit"):
            for _ in ask(hurried, stream=True, max_tokens=LONG, extra_body={"min_tokens": LONG}):
                pass
        assert httpx.get(f"{hurried.url}/health").json()["status"] == "ok"
        assert ask(hurried, max_tokens=2, extra_body={"min_tokens": 2}).usage.completion_tokens == 2
    finally:
        assert hurried.stop() == 0
