"""The serving engine's per-row token choice (numpy only, no model)."""

from __future__ import annotations

import pytest

from slmdeploy.serve.events import Sampling
from slmdeploy.serve.sampling import RowSampler

np = pytest.importorskip("numpy")
EOS = frozenset({0})


def logits(seed=0, size=50):
    return np.random.default_rng(seed).normal(size=size).astype(np.float32)


def draws(sampling, steps=20, defaults=None):
    sampler = RowSampler(sampling, defaults or {}, EOS, [3, 4])
    return [sampler.choose(logits(step)).token for step in range(steps)]


def test_the_same_seed_draws_the_same_tokens_and_another_seed_others():
    sampling = Sampling(max_new=20, temperature=1.0, seed=5)
    assert draws(sampling) == draws(sampling)
    assert draws(sampling) != draws(Sampling(max_new=20, temperature=1.0, seed=6))


def test_temperature_zero_and_top_k_one_are_the_argmax():
    expected = [int(np.argmax(logits(step))) for step in range(20)]
    assert draws(Sampling(max_new=20, temperature=0, repetition_penalty=1.0)) == expected
    assert draws(Sampling(max_new=20, temperature=1.5, top_k=1, seed=1, repetition_penalty=1.0)) == expected


def test_no_temperature_takes_the_packages_do_sample():
    greedy = draws(Sampling(max_new=20), defaults={"do_sample": False, "temperature": 0.9})
    assert greedy == [int(np.argmax(logits(step))) for step in range(20)]


def test_min_tokens_holds_off_the_end_and_logit_bias_moves_the_choice():
    row = logits()
    row[0] = 100.0  # the end-of-sequence token, far ahead
    sampler = RowSampler(Sampling(max_new=5, min_new=1, temperature=0), {}, EOS, [])
    assert sampler.choose(row.copy()).token != 0
    assert sampler.choose(row.copy()).token == 0
    biased = RowSampler(Sampling(max_new=5, temperature=0, logit_bias=((7, 200.0),)), {}, EOS, [])
    assert biased.choose(row.copy()).token == 7


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    row = np.full(50, -30.0, dtype=np.float32)
    row[[10, 11]] = [5.0, 4.0]  # about 0.73 and 0.27 of the mass
    tokens = draws_from(row, Sampling(max_new=200, temperature=1.0, top_p=0.5, seed=2), 200)
    assert tokens == {10}
    assert draws_from(row, Sampling(max_new=200, temperature=1.0, top_p=0.99, seed=2), 200) == {10, 11}


def draws_from(row, sampling, count):
    sampler = RowSampler(sampling, {"repetition_penalty": 1.0}, EOS, [])
    return {sampler.choose(row.copy()).token for _ in range(count)}


def test_logprobs_are_the_chosen_tokens_and_the_likeliest():
    sampler = RowSampler(Sampling(max_new=5, temperature=0, logprobs=3), {}, EOS, [])
    row = logits(3)
    choice = sampler.choose(row.copy())
    expected = row - np.log(np.sum(np.exp(row - row.max()))) - row.max()
    assert choice.logprob == pytest.approx(float(expected[choice.token]), abs=1e-5)
    assert [token for token, _ in choice.top] == list(np.argsort(-row)[:3])
