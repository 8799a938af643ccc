"""What the convert stage accepts (LoRA adapters) and how it refuses what it cannot use."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from slmdeploy.plugin import InputError, SourceModel, StageError
from slmdeploy.testing import run_slmdeploy
from slmdeploy.testing.fidelity import genai_logits
from slmdeploy.testing.models import SAMPLE_TEXT
from slmdeploy_olive.convert import OliveConverter

# A project that converts `model`; tests append a [quantize] table (its keys then start at line 7).
CONVERT = '[project]\nname = "m"\n[source]\npath = "{model}"\n[convert]\nplugin = "olive"\n'


def make_adapter(base, folder, targets=("q_proj", "v_proj")):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder)
    return peft_model.eval()


def logits_of(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def test_lora_adapter_is_merged_before_conversion(tiny_model, run_stage, tmp_path):
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model("llama")
    adapted = make_adapter(base, tmp_path / "adapter")
    ids = AutoTokenizer.from_pretrained(base)(SAMPLE_TEXT)["input_ids"]
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(base).eval(), ids)
    adapted_logits = logits_of(adapted, ids)
    converted = run_stage(OliveConverter, SourceModel(base, adapter=tmp_path / "adapter"))
    onnx_logits = genai_logits(converted.path, ids)[:, : adapted_logits.shape[1]]
    assert np.abs(onnx_logits - adapted_logits).max() < 1e-4
    assert np.abs(onnx_logits - base_logits).max() > 1e-2


def test_lora_adapter_for_another_architecture(tiny_model, run_stage, tmp_path):
    make_adapter(tiny_model("phi3"), tmp_path / "adapter", targets=("qkv_proj", "gate_up_proj"))
    with pytest.raises(InputError, match="targets modules gate_up_proj, qkv_proj that the base model"):
        run_stage(OliveConverter, SourceModel(tiny_model("llama"), adapter=tmp_path / "adapter"))


def copy_model(source, target, skip=()):
    target.mkdir()
    for file in source.iterdir():
        if file.name not in skip:
            (target / file.name).write_bytes(file.read_bytes())
    return target


def test_folder_without_config(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m", skip={"config.json"})
    with pytest.raises(InputError, match=r"has no config\.json, so it is not a Hugging Face model folder"):
        run_stage(OliveConverter, SourceModel(folder))


def test_unknown_architecture(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"], config["model_type"] = ["MambaForCausalLM"], "mamba"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as caught:
        run_stage(OliveConverter, SourceModel(folder))
    message = str(caught.value)
    assert "is a MambaForCausalLM (model_type 'mamba'), which the ONNX Runtime GenAI" in message
    assert "model builder cannot export; slmdeploy converts" in message
    assert "LlamaForCausalLM" in message and "Qwen3ForCausalLM" in message and "Phi3ForCausalLM" in message
    assert "slmdeploy_register_converters" in message


def test_config_without_architecture(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(InputError, match="names no model architecture"):
        run_stage(OliveConverter, SourceModel(folder))


def test_truncated_weights(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError, match=r"model.safetensors is truncated: its header places [\d,]+ bytes"):
        run_stage(OliveConverter, SourceModel(folder))


def test_missing_weights(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m", skip={"model.safetensors"})
    with pytest.raises(InputError, match="has no weight files"):
        run_stage(OliveConverter, SourceModel(folder))


def test_missing_tokenizer(tiny_model, run_stage, tmp_path):
    folder = copy_model(tiny_model("llama"), tmp_path / "m", skip={"tokenizer.json"})
    with pytest.raises(InputError, match="has no tokenizer"):
        run_stage(OliveConverter, SourceModel(folder))


def test_gguf_that_is_not_gguf(run_stage, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InputError, match=r"model.gguf is not a GGUF file \(it starts with b'PK"):
        run_stage(OliveConverter, SourceModel(fake, format="gguf"))


def test_disk_write_failure_during_export_caches_nothing(tiny_model, slmdeploy_project):
    """A file size limit makes every large write fail (EFBIG), as a full disk would (ENOSPC)."""
    project = slmdeploy_project(CONVERT.format(model=tiny_model("llama"))).path
    limit = 300_000

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "build"],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 2, result.stderr
    assert "File too large" in result.stderr
    assert "Traceback" not in result.stderr.split("the worker's log")[0]
    assert not list((project / ".slmdeploy" / "cache").glob("*"))
    assert not list((project / ".slmdeploy" / "tmp").glob("*"))


def test_unsupported_precision_option(tiny_model, slmdeploy_project):
    quantize = '[quantize]\nplugin = "olive"\nprecision = ["int4", "int3"]\n'
    project = slmdeploy_project(CONVERT.format(model=tiny_model("llama")) + quantize).path
    result = run_slmdeploy(project, "plan")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert (
        'slmdeploy.toml:9: [quantize] precision must be one of "int4", "int8", "fp32", "fp16", not \'int3\'' in message
    )


def test_fp16_for_the_cpu_is_refused_before_any_work(tiny_model, slmdeploy_project):
    quantize = '[quantize]\nplugin = "olive"\nprecision = ["int4", "fp16"]\n'
    project = slmdeploy_project(CONVERT.format(model=tiny_model("llama")) + quantize).path
    result = run_slmdeploy(project, "build")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert 'precision "fp16" is for GPU execution providers, but [convert] device is "cpu"' in message
    assert "slmdeploy.toml:9" in message and '"cuda", "dml" or "webgpu"' in message
    assert not (project / ".slmdeploy" / "cache").exists()


def test_fp16_is_built_for_a_gpu_but_not_run_here(tiny_model, run_stage):
    from slmdeploy_olive.quantize import OliveQuantizer

    converted = run_stage(OliveConverter, SourceModel(tiny_model("qwen2")), {"device": "cuda"})
    assert converted.execution_provider == "cuda"
    fp16 = run_stage(OliveQuantizer, converted, {"precision": "fp16"})
    assert fp16.precision == "fp16" and fp16.execution_provider == "cuda"
    import onnx

    model = onnx.load(str(fp16.path / "model.onnx"), load_external_data=False)
    types = {initializer.data_type for initializer in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types


def test_a_builder_option_that_makes_an_unloadable_model_fails_the_stage(tiny_model, run_stage):
    """An int4 model with its output renamed away is what Olive's RTN pass makes without the rename surgery."""
    from slmdeploy_olive import quantize

    converted = run_stage(OliveConverter, SourceModel(tiny_model("llama")))
    broken = quantize.passes
    try:
        quantize.passes = lambda *given: {k: v for k, v in broken(*given).items() if k != "surgery"}
        with pytest.raises(StageError, match=r"genai_config\.json expects the graph's logits to be 'logits'"):
            run_stage(quantize.OliveQuantizer, converted, {"precision": "int4"})
    finally:
        quantize.passes = broken
