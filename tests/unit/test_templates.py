"""Template families on the real chat templates of each model family (tests/fixtures/chat_templates, each
file naming where its template was copied from), with model folders made of the tokenizer files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmdeploy.artifacts import ModelInfo
from slmdeploy.errors import ConfigError, StageError
from slmdeploy.host.manager import get_plugin_manager
from slmdeploy.host.registry import Registry
from slmdeploy.plugin import DeployPackage, OnnxModel

FIXTURES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
DERIVABLE = [name for name in NAMES if name != "mistral"]  # Mistral's [INST] format is not a sequence of turns
TABLES = {
    "project": {"name": "tiny", "version": 3, "description": "a test model"},
    "generation": {"max_length": 512, "temperature": 0.6, "top_p": 0.95, "repetition_penalty": 1.05},
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def model_folder(root: Path, data: dict, template: str | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A model folder as the convert stage leaves it, minus the weights: tokenizer files, configs."""
    folder = root / "model"
    folder.mkdir(parents=True)
    specials = [
        token
        for token in dict.fromkeys(
            [
                data["bos_token"],
                data["eos_token"],
                data["pad_token"],
                *data["special_tokens"],
                *data["generation_eos_tokens"],
            ]
        )
        if token and token not in drop
    ]
    vocab = {chr(ord("a") + index): index for index in range(26)}
    added = [{"id": 100 + index, "content": token, "special": True} for index, token in enumerate(specials)]
    (folder / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": added})
    )
    ids = {token["content"]: token["id"] for token in added}
    config = {key: data[key] for key in ("bos_token", "eos_token", "pad_token") if data[key]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(template if template is not None else data["chat_template"])
    (folder / "config.json").write_text(
        json.dumps({"model_type": data["model_type"], "architectures": data["architectures"]})
    )
    eos_ids = [ids[token] for token in data["generation_eos_tokens"] if token in ids]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos_ids}))
    genai = {
        "model": {"context_length": 4096, "eos_token_id": ids.get(data["eos_token"])},
        "search": {"max_length": 4096, "top_k": 50},
    }
    (folder / "genai_config.json").write_text(json.dumps(genai))
    (folder / "model.onnx").write_bytes(b"weights stand-in")
    return folder


@pytest.fixture(scope="module")
def registry():
    """The shipped families only (the example plugin, when installed, would claim Mistral)."""
    return Registry(get_plugin_manager(disabled=["mistral"]))


def family_class(registry, name):
    return registry.get("template", name).cls


@pytest.mark.parametrize("name", NAMES)
def test_dispatch_picks_the_family(name, registry, tmp_path):
    data = fixture(name)
    model = ModelInfo.from_dir(model_folder(tmp_path, data))
    assert registry.manager.hook.slmdeploy_template_family(model=model) == data["expected_family"]


@pytest.mark.parametrize("name", DERIVABLE)
def test_family_writes_the_package(name, registry, run_stage, tmp_path):
    data = fixture(name)
    folder = model_folder(tmp_path, data)
    cls = family_class(registry, data["expected_family"])
    package = run_stage(cls, OnnxModel(folder, precision="int4"), tables=TABLES, variant="int4")
    assert isinstance(package, DeployPackage) and package.family == data["expected_family"]
    assert package.model_name == "test-model-int4"
    info = json.loads((package.path / "inference_model.json").read_text())
    assert info["Version"] == "1" and info["Description"] == "a test model"
    assert set(info["PromptTemplate"]) == {"system", "user", "assistant", "prompt"}
    assert all("{Content}" in text for text in info["PromptTemplate"].values())
    assert info["ModelConfig"] == {key: TABLES["generation"][key] for key in info["ModelConfig"]}
    assert info["ToolCall"] == dict(zip(("Start", "End"), cls.TOOL_CALL, strict=True))  # for slmdeploy serve
    genai = json.loads((package.path / "genai_config.json").read_text())
    tokenizer = json.loads((package.path / "tokenizer.json").read_text())
    ids = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    eos = genai["model"]["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    expected = {ids[data["eos_token"]], *(ids[token] for token in data["generation_eos_tokens"])}
    assert expected <= set(eos)
    assert genai["search"]["temperature"] == 0.6 and genai["search"]["top_p"] == 0.95
    assert genai["search"]["max_length"] == 512 and genai["search"]["do_sample"] is True
    assert genai["search"]["top_k"] == 50  # the rest of the search section is kept
    kept = json.loads((package.path / "tokenizer_config.json").read_text())["chat_template"]
    assert kept == data["chat_template"] == (package.path / "chat_template.jinja").read_text()
    assert (package.path / "model.onnx").samefile(folder / "model.onnx")  # weights are linked, not copied


def test_the_tokenizer_is_written_compact_and_the_same(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("qwen2.5"))
    indented = json.dumps(json.loads((folder / "tokenizer.json").read_text()), indent=2)  # as transformers saves it
    (folder / "tokenizer.json").write_text(indented)
    package = run_stage(family_class(registry, "qwen"), OnnxModel(folder), tables=TABLES)
    written = (package.path / "tokenizer.json").read_text()
    assert json.loads(written) == json.loads(indented) and len(written) < len(indented) and "\n" not in written
    assert (folder / "tokenizer.json").read_text() == indented  # the converted model's own file is not touched


def test_qwen_templates_are_the_documented_ones(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("qwen2.5"))
    package = run_stage(family_class(registry, "qwen"), OnnxModel(folder), tables=TABLES)
    assert json.loads((package.path / "inference_model.json").read_text())["PromptTemplate"] == {
        "system": "<|im_start|>system\n{Content}<|im_end|>",
        "user": "<|im_start|>user\n{Content}<|im_end|>",
        "assistant": "<|im_start|>assistant\n{Content}<|im_end|>",
        "prompt": "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant",
    }
    genai = json.loads((package.path / "genai_config.json").read_text())
    tokenizer = {
        t["content"]: t["id"] for t in json.loads((package.path / "tokenizer.json").read_text())["added_tokens"]
    }
    assert sorted(genai["model"]["eos_token_id"]) == sorted([tokenizer["<|im_end|>"], tokenizer["<|endoftext|>"]])


@pytest.mark.parametrize(
    ("name", "end_tokens"),
    [
        ("llama3", {"<|eot_id|>", "<|end_of_text|>"}),
        ("phi3.5", {"<|end|>", "<|endoftext|>"}),
        ("smollm2", {"<|im_end|>"}),
    ],
)
def test_stop_tokens_of_families_with_several_end_tokens(name, end_tokens, registry, run_stage, tmp_path):
    data = fixture(name)
    package = run_stage(
        family_class(registry, data["expected_family"]), OnnxModel(model_folder(tmp_path, data)), tables=TABLES
    )
    tokenizer = {
        t["content"]: t["id"] for t in json.loads((package.path / "tokenizer.json").read_text())["added_tokens"]
    }
    eos = json.loads((package.path / "genai_config.json").read_text())["model"]["eos_token_id"]
    assert {tokenizer[token] for token in end_tokens} <= set(eos if isinstance(eos, list) else [eos])


def test_a_wrong_template_is_rejected_with_both_renderings(registry, run_stage, tmp_path):
    data = fixture("qwen2.5")
    wrong = data["chat_template"].replace(
        "'<|im_start|>' + message.role + '\\n'", "'<|im_start|>' + message.role + ': '"
    )
    assert wrong != data["chat_template"]
    folder = model_folder(tmp_path, data, template=wrong)
    with pytest.raises(StageError) as caught:
        run_stage(family_class(registry, "qwen"), OnnxModel(folder), tables=TABLES)
    message = str(caught.value)
    assert 'the qwen family writes the "system and user" conversation differently' in message
    assert "chat_template (expected)" in message and "family (what would be deployed)" in message
    assert "'<|im_start|>user: What is the capital of France?<|im_end|>'" in message
    assert "'<|im_start|>user'" in message
    assert 'family = "derived"' in message
    derived = run_stage(family_class(registry, "derived"), OnnxModel(folder), tables=TABLES)
    prompt = json.loads((derived.path / "inference_model.json").read_text())["PromptTemplate"]
    assert prompt["user"] == "<|im_start|>user: {Content}<|im_end|>"


def test_a_stop_token_missing_from_the_vocabulary_is_an_error(registry, run_stage, tmp_path):
    data = fixture("llama3")
    folder = model_folder(tmp_path, data, drop=("<|eot_id|>",))
    with pytest.raises(
        StageError, match="the stop token '<\\|eot_id\\|>' of the llama3 family is not in the tokenizer"
    ):
        run_stage(family_class(registry, "llama3"), OnnxModel(folder), tables=TABLES)


def test_a_family_override_that_does_not_fit(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("smollm2"))
    with pytest.raises(StageError, match="the phi family writes"):
        run_stage(family_class(registry, "phi"), OnnxModel(folder), tables=TABLES)


def test_no_chat_template_is_an_error(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("qwen2"), template="")
    (folder / "chat_template.jinja").unlink()
    model = ModelInfo.from_dir(folder)
    with pytest.raises(ConfigError, match="no installed template family claims this model"):
        registry.manager.hook.slmdeploy_template_family(model=model)
    with pytest.raises(StageError, match="the tokenizer has no chat_template"):
        run_stage(family_class(registry, "qwen"), OnnxModel(folder), tables=TABLES)


def test_the_fallback_refuses_a_format_it_cannot_derive(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("mistral"))
    with pytest.raises(StageError, match="cannot be derived from the tokenizer's chat_template: turns do not end"):
        run_stage(family_class(registry, "derived"), OnnxModel(folder), tables=TABLES)


def test_gemma_without_a_system_role_is_derived(registry, run_stage, tmp_path):
    package = run_stage(
        family_class(registry, "derived"), OnnxModel(model_folder(tmp_path, fixture("gemma2"))), tables=TABLES
    )
    prompt = json.loads((package.path / "inference_model.json").read_text())["PromptTemplate"]
    assert prompt["user"] == "<start_of_turn>user\n{Content}<end_of_turn>"
    assert prompt["prompt"] == "<start_of_turn>user\n{Content}<end_of_turn>\n<start_of_turn>model"


def test_gemma3_folds_the_system_message_into_the_first_user_turn(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("gemma3"))
    package = run_stage(family_class(registry, "gemma"), OnnxModel(folder), tables=TABLES)
    family = family_class(registry, "gemma")
    model = ModelInfo.from_dir(folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert family.__new__(family).render(messages, model, None) == expected
    prompt = json.loads((package.path / "inference_model.json").read_text())["PromptTemplate"]
    assert prompt["prompt"] == "<start_of_turn>user\n{Content}<end_of_turn>\n<start_of_turn>model"
    assert prompt["assistant"] == "<start_of_turn>model\n{Content}<end_of_turn>"


def test_a_gemma_family_writing_the_wrong_answer_role_fails_on_gemma2(registry, run_stage, tmp_path):
    """Gemma 2 refuses system messages, so only the conversation without one checks the answer turn's role."""
    gemma = family_class(registry, "gemma")
    wrong = type("WrongGemma", (gemma,), {"PLUGIN_NAME": "wrong-gemma", "ROLES": {}})
    folder = model_folder(tmp_path, fixture("gemma2"))
    with pytest.raises(StageError) as caught:
        run_stage(wrong, OnnxModel(folder), tables=TABLES)
    assert 'writes the "multi-turn without system" conversation differently' in str(caught.value)
    assert "'<start_of_turn>assistant'" in caught.value.details


def test_the_parity_error_shows_the_fix_before_the_renderings(registry, run_stage, tmp_path):
    folder = model_folder(tmp_path, fixture("smollm2"))
    with pytest.raises(StageError) as caught:
        run_stage(family_class(registry, "phi"), OnnxModel(folder), tables=TABLES)
    paragraph, _, table = str(caught.value).partition("\n")
    assert paragraph.endswith("fix the chat_template in tokenizer_config.json.")
    assert table.startswith("  chat_template (expected)") and "tokenizer_config.json" not in table


def test_a_family_written_against_the_old_has_system_role_still_works(registry, run_stage, tmp_path):
    chatml = family_class(registry, "chatml")

    class OldStyle(chatml):
        PLUGIN_NAME = "old-style"

        def has_system_role(self):  # the signature before it received the model
            return True

    package = run_stage(OldStyle, OnnxModel(model_folder(tmp_path, fixture("smollm2"))), tables=TABLES)
    assert package.family == "old-style"


def test_has_system_role_sees_the_model(registry, tmp_path):
    gemma = family_class(registry, "gemma")
    family = gemma.__new__(gemma)
    assert family.has_system_role(ModelInfo.from_dir(model_folder(tmp_path / "3", fixture("gemma3")))) is True
    assert family.has_system_role(ModelInfo.from_dir(model_folder(tmp_path / "2", fixture("gemma2")))) is False


def test_the_starter_file_names_only_families_that_exist(registry):
    import re

    from slmdeploy.config.scaffold import STARTER

    line = next(line for line in STARTER.splitlines() if "a plugin's" in line)
    names = re.findall(r'"(\w+)"', line)
    assert "gemma" in names and set(names) <= set(registry.names("template"))
