"""[runtime] prefill_chunk: a built package reads a long prompt in chunks (onnxruntime-genai's search.chunk_size), and
what it computes is what the one-step prefill computes, on a graph whose head reads the last position only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving import tiny_project

CONTEXT = 512


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return tiny_project(tmp_path_factory.mktemp("tiny"), CONTEXT) / "build" / "int4" / "model"


def prefill_then_greedy(package, chunk: int, prompt: list[int], new_tokens: int = 0):
    """The next-token logits after `prompt` read `chunk` tokens a step (0: in one step), as a package with
    `[runtime] prefill_chunk` reads it, and the `new_tokens` greedy tokens that follow."""
    import onnxruntime_genai as og

    from slmdeploy.model.runtime import load_genai_model

    model = load_genai_model(package, 1, {"search": {"chunk_size": chunk}})
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + max(new_tokens, 1))
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    first = np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)
    tokens = []
    for _ in range(new_tokens):
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return first, tokens


def test_the_package_carries_the_default_chunk(package):
    assert json.loads((package / "genai_config.json").read_text())["search"]["chunk_size"] == 256


def test_a_chunked_prefill_computes_what_one_step_does(package):
    from slmdeploy.model.runtime import last_position_logits_only

    assert last_position_logits_only(package)  # the pruned head, whose output is one position per chunk
    prompt = [int(token) for token in np.random.default_rng(3).integers(10, 500, 150)]
    whole, whole_tokens = prefill_then_greedy(package, 0, prompt, 12)
    for chunk in (16, 64, 149):  # several chunks, a last one shorter than the rest, and one token left over
        chunked, tokens = prefill_then_greedy(package, chunk, prompt, 12)
        np.testing.assert_allclose(chunked, whole, atol=1e-3 * float(np.abs(whole).max()))
        assert int(chunked.argmax()) == int(whole.argmax())
        assert tokens == whole_tokens, chunk


def test_the_runtime_reads_a_long_prompt_in_the_packages_chunks(package, capfd):
    """The package's own genai_config.json (256 tokens a step): the decoder runs on 256 and then 44 of a 300-token
    prompt, as onnxruntime-genai's log of each run's inputs shows."""
    import re

    import onnxruntime_genai as og

    from slmdeploy.model.runtime import load_genai_model

    model = load_genai_model(package, 1)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=310)
    generator = og.Generator(model, params)
    capfd.readouterr()
    og.set_log_options(enabled=True, model_input_values=True)
    try:
        generator.append_tokens(np.arange(10, 310, dtype=np.int32))
    finally:
        og.set_log_options(enabled=False, model_input_values=False)
    captured = capfd.readouterr()
    log = re.sub(r"\x1b\[[0-9;]*m", "", captured.out + captured.err)
    steps = [int(width) for width in re.findall(r"Name: input_ids ShapeDims\[ 2\]Shape\[ 1 (\d+) \]", log)]
    assert steps == [256, 44], log[-2000:]
