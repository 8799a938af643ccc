"""The Mistral family with slmdeploy's pytest plugin: a tiny random Mistral carrying the real chat template
of Mistral-7B-Instruct-v0.2 (mistral-instruct-v0.2.json says where it was copied from), built end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slmdeploy_mistral import MistralFamily

from slmdeploy.plugin import OnnxModel, StageError

REAL = json.loads((Path(__file__).parent / "mistral-instruct-v0.2.json").read_text(encoding="utf-8"))
SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<unk>", "extra": []}
GENERATION = {"max_length": 256, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}
PROJECT = """\
[project]
name = "tiny-mistral"

[source]
path = "{model}"

[convert]
plugin = "olive"

[quantize]
plugin = "olive"
precision = "int4"

[template]
family = "auto"

[generation]
temperature = 0.0
"""


@pytest.fixture
def mistral(tiny_model):
    return tiny_model("mistral", chat_template=REAL["chat_template"], special=SPECIAL)


def test_build_picks_the_mistral_family(mistral, slmdeploy_project):
    project = slmdeploy_project(PROJECT.format(model=mistral))
    listing = json.loads(project.cli("plugins", "--json").stdout)
    assert {"stage": "template", "name": "mistral"} in next(p for p in listing if p["name"] == "mistral")["provides"]
    result = project.cli("build")
    assert result.exit_code == 0, result.output
    package = project.path / "build" / "int4" / "model"
    info = json.loads((package / "inference_model.json").read_text())
    assert info["PromptTemplate"]["prompt"] == "[INST] {Content} [/INST]"
    genai = json.loads((package / "genai_config.json").read_text())
    tokenizer = json.loads((package / "tokenizer.json").read_text())
    eos_id = next(token["id"] for token in tokenizer["added_tokens"] if token["content"] == "</s>")
    assert genai["model"]["eos_token_id"] == eos_id
    assert genai["search"]["do_sample"] is False
    manifest = json.loads((project.path / "build" / "int4" / "manifest.json").read_text())
    assert manifest["stages"][2]["plugin"] == "mistral"


def test_a_modified_template_fails_the_parity_check(tiny_model, run_stage):
    changed = REAL["chat_template"].replace("'\\n\\n'", "'\\n'")
    folder = tiny_model("mistral", chat_template=changed, special=SPECIAL)
    tables = {"project": {"name": "tiny-mistral", "description": ""}, "generation": GENERATION}
    with pytest.raises(StageError, match='the mistral family writes the "system and user" conversation differently'):
        run_stage(MistralFamily, OnnxModel(folder), tables=tables)
