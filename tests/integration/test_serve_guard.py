"""`slmdeploy serve` against browsers and hostile clients: bodies past the limit, cross-origin and mistyped posts, a
wrong Host (DNS rebinding), connections that never finish their headers, limits on prompts and answers; and the
fields real clients send besides the ones that change an answer."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import openai
import psutil
import pytest

from serving import ServerProcess, client

HEADER_TIMEOUT_S = 2.0
BODY_LIMIT = 1_000_000
IDLE_CONNECTIONS = 200
CLOSE_WAIT_S = 30  # at most, for the idle connections to be closed (polled)
ORIGIN = "https://allowed.example"


@pytest.fixture(scope="module")
def server(tiny_serving_project):
    running = ServerProcess(
        tiny_serving_project, "--threads", "1", "--header-timeout", str(HEADER_TIMEOUT_S),
        "--max-body-bytes", str(BODY_LIMIT), "--max-tokens-cap", "64", "--default-max-tokens", "5",
        "--max-prompt-tokens", "300", "--allowed-host", "my.box", "--cors-origin", ORIGIN,
    )  # fmt: skip
    yield running
    assert running.stop() == 0, running.output()


def chat(server, **fields):
    body = {"model": "tiny-int4", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **fields}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def error_of(response):
    return response.json()["error"]["message"]


def test_a_body_past_the_limit_is_413_before_it_is_read(server):
    rss_before = psutil.Process(server.process.pid).memory_info().rss
    body = b'{"model": "tiny-int4", "messages": [{"role": "user", "content": "' + b"x" * 50_000_000 + b'"}]}'
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 413 and f"limit of {BODY_LIMIT} bytes" in error_of(response)
    # unread: the server's memory did not take the 50 MB (measured growth: under 1 MB)
    assert psutil.Process(server.process.pid).memory_info().rss - rss_before < 10_000_000
    assert time.monotonic() - started < 30

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(50):
            yield b"x" * 100_000

    response = httpx.post(
        f"{server.url}/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert chat(server).status_code == 200  # and the server still answers


def test_a_cross_origin_text_plain_post_is_415_and_cors_is_only_for_named_origins(server):
    # what any web page can send without a preflight: a "simple" request with a text/plain body
    body = json.dumps({"model": "tiny-int4", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "text/plain", "origin": "https://evil.example"}
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 415 and "application/json" in error_of(response)
    assert "access-control-allow-origin" not in response.headers
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}  # fmt: skip
    refused = httpx.options(f"{server.url}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers
    allowed = httpx.options(f"{server.url}/v1/chat/completions", headers={**preflight, "origin": ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN


def test_the_host_header_must_name_this_server(server):
    for host in ("evil.example", "evil.example:80", "127.0.0.2.nip.io"):
        response = httpx.get(f"{server.url}/v1/models", headers={"host": host})
        assert response.status_code == 400 and "Host header" in error_of(response), host
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "my.box"):
        assert httpx.get(f"{server.url}/v1/models", headers={"host": host}).status_code == 200, host


def test_connections_that_never_finish_their_headers_are_closed_and_others_are_served(server):
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
            idle.append(connection)
        assert chat(server).status_code == 200  # meanwhile
        deadline = time.monotonic() + CLOSE_WAIT_S
        for connection in idle:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            assert connection.recv(1) == b"", "an idle connection was not closed"  # b"": closed by the server
    finally:
        for connection in idle:
            connection.close()
    assert chat(server).status_code == 200


def test_answer_and_prompt_limits(server):
    response = chat(server, max_tokens=65)
    assert response.status_code == 400 and "limit of 64" in error_of(response)
    assert chat(server, max_tokens=64, min_tokens=64, temperature=0).json()["usage"]["completion_tokens"] == 64
    unlimited = chat(server, max_tokens=None, min_tokens=5, temperature=0)  # the server's default: 5 tokens
    assert unlimited.json()["usage"]["completion_tokens"] == 5
    assert unlimited.json()["choices"][0]["finish_reason"] == "length"
    response = chat(server, max_tokens=4, min_tokens=5)
    assert response.status_code == 400 and "min_tokens (5) is more than max_tokens (4)" in error_of(response)
    response = chat(server, messages=[{"role": "user", "content": "hello " * 400}])
    assert response.status_code == 400 and "limit of 300 (--max-prompt-tokens)" in error_of(response)


def test_fields_clients_send_that_change_nothing_are_accepted(server):
    plain = chat(server, temperature=0, min_tokens=4).json()["choices"][0]["message"]["content"]
    extras = {"user": "u-1", "metadata": {"session": "x"}, "store": False, "service_tier": "auto",
              "parallel_tool_calls": True}  # fmt: skip
    answer = chat(server, temperature=0, min_tokens=4, **extras)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == plain


def test_developer_is_system_and_parts_that_are_not_text_are_refused(server):
    def answer(first_role):
        messages = [{"role": first_role, "content": "Be brief."}, {"role": "user", "content": "hi"}]
        return chat(server, temperature=0, min_tokens=4, messages=messages).json()["choices"][0]["message"]

    assert answer("developer") == answer("system")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    response = chat(server, messages=[{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}])
    assert response.status_code == 400 and "takes text only" in error_of(response)
    response = chat(server, best_of=2)
    assert response.status_code == 400 and "'best_of'" in error_of(response)


def test_health_names_models_only_to_a_client_with_the_key(tiny_serving_project):
    keyed = ServerProcess(
        tiny_serving_project, "--threads", "1", "--api-key-env", "TEST_SERVE_KEY", env={"TEST_SERVE_KEY": "s3cret"}
    )
    try:
        assert httpx.get(f"{keyed.url}/health").json() == {"status": "ok"}
        shown = httpx.get(f"{keyed.url}/health", headers={"Authorization": "Bearer s3cret"}).json()
        assert shown == {"status": "ok", "models": ["tiny-int4"]}
        with pytest.raises(openai.AuthenticationError):
            client(keyed, "wrong").models.list()
    finally:
        assert keyed.stop() == 0


def test_many_requests_at_once_are_all_answered(server):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: chat(server).status_code, range(16)))
    assert codes == [200] * 16


def engine_tokens(server):
    line = next(line for line in httpx.get(f"{server.url}/metrics").text.splitlines()
                if line.startswith('slmdeploy_engine_tokens_total{model="tiny-int4"}'))  # fmt: skip
    return float(line.split()[-1])


def test_a_timed_out_request_stops_generating(tiny_serving_project):
    """Two rows: an answer past its timeout that went on generating in one would add tokens while a short request
    runs in the other; the engine's own token count shows that it adds none."""
    hurried = ServerProcess(tiny_serving_project, "--threads", "1", "--timeout", "1", "--max-batch", "2")
    try:
        with pytest.raises(openai.APIStatusError) as raised:
            client(hurried).chat.completions.create(
                model="tiny-int4", messages=[{"role": "user", "content": "hi"}], max_tokens=30000,
                extra_body={"min_tokens": 30000},
            )  # fmt: skip
        assert raised.value.status_code == 504
        assert chat(hurried, max_tokens=2, min_tokens=2).status_code == 200  # the cancel is behind this request
        before = engine_tokens(hurried)
        assert chat(hurried, max_tokens=8, min_tokens=8).json()["usage"]["completion_tokens"] == 8
        assert engine_tokens(hurried) - before == 8  # this request's tokens, and no other's
    finally:
        assert hurried.stop() == 0
