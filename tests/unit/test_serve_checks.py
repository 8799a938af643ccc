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
    unknown = error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": []}')
    assert unknown.param == "tools" and "does not honour" in unknown.message
    bias = error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 300}}')
    assert bias.param == "logit_bias" and "-100 to 100" in bias.message
    assert error_for('{"messages": [{"role": "user", "content": "x"}]}').param == "model"
    assert error_for('{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}').param == "n"
