"""The parts of `slmdeploy serve` that need no model: stop strings, the address and key checks, request errors."""

from __future__ import annotations

import pytest

from slmdeploy.errors import ConfigError
from slmdeploy.serve.server import ServeOptions, api_key, is_loopback
from slmdeploy.serve.text import StopText


def feed_all(stop: StopText, pieces: list[str]) -> str:
    return "".join(stop.feed(piece) for piece in pieces) + stop.flush()


def test_a_stop_string_split_across_tokens_is_never_sent():
    stop = StopText(["END"])
    assert stop.feed("one E") == "one "  # "E" may begin END: held back
    assert stop.feed("N") == ""
    assert stop.feed("D two") == ""
    assert stop.matched


def test_held_back_text_that_did_not_become_a_stop_is_sent():
    assert feed_all(StopText(["END"]), ["a E", "N", "x"]) == "a ENx"
    assert feed_all(StopText(["END"]), ["tail E"]) == "tail E"


def test_the_earliest_of_several_stops_wins():
    stop = StopText(["world", "lo"])
    assert stop.feed("hello world") == "hel"


HOSTS = [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("10.1.2.3", False)]


@pytest.mark.parametrize(("host", "loopback"), HOSTS)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_a_public_address_needs_a_key(monkeypatch):
    with pytest.raises(ConfigError, match="--api-key-env"):
        api_key(ServeOptions(host="0.0.0.0"))
    monkeypatch.setenv("SERVE_KEY", "k")
    assert api_key(ServeOptions(host="0.0.0.0", api_key_env="SERVE_KEY")) == "k"
    monkeypatch.setenv("SERVE_KEY", "")
    with pytest.raises(ConfigError, match="not set or empty"):
        api_key(ServeOptions(api_key_env="SERVE_KEY"))


def test_request_errors_name_the_field():
    pydantic = pytest.importorskip("pydantic")
    from slmdeploy.serve.schema import ChatCompletionRequest, validation_error

    def error_for(body: str):
        with pytest.raises(pydantic.ValidationError) as raised:
            ChatCompletionRequest.model_validate_json(body)
        return validation_error([dict(item) for item in raised.value.errors()])

    assert "not valid JSON" in error_for("{").message
    unknown = error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "best_of": 2}')
    assert unknown.param == "best_of" and "does not honour" in unknown.message
    bias = error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 300}}')
    assert bias.param == "logit_bias" and "-100 to 100" in bias.message
    assert error_for('{"messages": [{"role": "user", "content": "x"}]}').param == "model"
    assert error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}').param == "n"


def request(**fields):
    from slmdeploy.serve.schema import ChatCompletionRequest

    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}
    )


def test_fields_that_change_nothing_are_accepted_and_the_ones_that_would_are_checked():
    pydantic = pytest.importorskip("pydantic")
    accepted = request(user="u", metadata={"k": "v"}, store=True, service_tier="auto", parallel_tool_calls=False)
    assert accepted.model == "m"
    assert request(logit_bias={"17": -100, "3": 2.5}).token_biases() == ((17, -100), (3, 2.5))
    assert request(logprobs=True, top_logprobs=3).logprob_count() == 3 and request().logprob_count() is None
    for bad in ({"min_tokens": 5, "max_tokens": 4}, {"top_logprobs": 2}, {"logit_bias": {"a": 1}},
                {"logit_bias": {"1": 101}}, {"frequency_penalty": 3}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            request(**bad)


def test_developer_turns_are_system_turns_and_only_text_parts_are_read():
    pydantic = pytest.importorskip("pydantic")
    from slmdeploy.serve.messages import Message

    assert Message(role="developer", content="be brief").as_template_input() == {
        "role": "system",
        "content": "be brief",
    }
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert Message(role="user", content=parts).as_template_input()["content"] == "ab"
    with pytest.raises(pydantic.ValidationError, match="takes text only"):
        Message(role="user", content=[{"type": "image_url", "image_url": {"url": "x"}}])
    with pytest.raises(pydantic.ValidationError, match="needs content"):
        Message(role="user", content=None)
    assert Message(role="assistant", content=None).as_template_input()["content"] == ""


HOST_HEADERS = [
    ("127.0.0.1", "127.0.0.1:8000", True), ("127.0.0.1", "localhost", True), ("127.0.0.1", "[::1]:8000", True),
    ("127.0.0.1", "evil.example", False), ("127.0.0.1", "evil.example:8000", False), ("127.0.0.1", "", False),
    ("0.0.0.0", "192.0.2.7:8000", True), ("0.0.0.0", "rebind.example", False), ("192.0.2.7", "192.0.2.7", True),
    ("192.0.2.7", "localhost", False),
]  # fmt: skip


@pytest.mark.parametrize(("bound", "header", "admitted"), HOST_HEADERS)
def test_the_host_header_names_the_bound_address(bound, header, admitted):
    from slmdeploy.serve.guard import HostPolicy

    assert HostPolicy(bound).admits(header) is admitted
    assert HostPolicy(bound, ("Evil.Example",)).admits("evil.example:1") is True
