"""Template families on converted tiny models: chosen automatically, written so onnxruntime-genai loads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmdeploy.testing import run_slmdeploy

FIXTURES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
CASES = [
    ("qwen2.5", "qwen2", "qwen"),
    ("phi3.5", "phi3", "phi"),
    ("llama3", "llama", "llama3"),
    ("smollm2", "llama", "chatml"),
    ("gemma2", "llama", "derived"),  # a Gemma template on a Llama: no specific family claims it
    ("gemma2", "gemma2", "gemma"),  # sliding window 64, answered with a shorter context
    ("gemma3", "gemma3", "gemma"),
]


def special_tokens(data: dict) -> dict:
    extra = [
        token
        for token in dict.fromkeys([*data["special_tokens"], *data["generation_eos_tokens"]])
        if token not in (data["bos_token"], data["eos_token"], data["pad_token"])
    ]
    return {
        "bos": data["bos_token"] or "<|endoftext|>",
        "eos": data["eos_token"],
        "pad": data["pad_token"] or data["eos_token"],
        "extra": extra,
    }


@pytest.mark.parametrize(("fixture", "architecture", "family"), CASES)
def test_family_is_chosen_and_the_package_runs(fixture, architecture, family, tiny_model, tmp_path):
    import onnxruntime_genai as og

    data = json.loads((FIXTURES / f"{fixture}.json").read_text(encoding="utf-8"))
    model = tiny_model(architecture, chat_template=data["chat_template"], special=special_tokens(data))
    project = tmp_path / "project"
    project.mkdir()
    (project / "slmdeploy.toml").write_text(
        f'[project]\nname = "tiny"\n[source]\npath = "{model}"\n[convert]\nplugin = "olive"\n'
        '[quantize]\nplugin = "olive"\nprecision = "int4"\n[template]\nfamily = "auto"\n'
    )
    result = run_slmdeploy(project, "build")
    assert result.returncode == 0, result.stderr
    assert f"int4: template ({family}): done" in result.stderr
    package = project / "build" / "int4" / "model"
    loaded = og.Model(str(package))
    tokenizer = og.Tokenizer(loaded)
    prompt = tokenizer.apply_chat_template(
        json.dumps([{"role": "user", "content": "hello"}]), add_generation_prompt=True
    )
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(loaded)
    params.set_search_options(do_sample=False, max_length=len(ids) + 4)
    generator = og.Generator(loaded, params)
    generator.append_tokens(ids)
    generator.generate_next_token()
    eos = json.loads((package / "genai_config.json").read_text())["model"]["eos_token_id"]
    assert set(tokenizer.eos_token_ids) == set(eos if isinstance(eos, list) else [eos])
