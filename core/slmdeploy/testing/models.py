"""Tiny random-weight Hugging Face models, made offline in a second, for testing stages on any architecture.

`make_tiny_model` saves a 2-layer model (hidden size 64) of any architecture transformers knows, named by its
``model_type`` (``"llama"``, ``"gemma2"``, ``"granite"`` ...) or given as a config (a dict with a ``model_type``
or a transformers config object). `TINY_OVERRIDES` holds what some architectures need on top of the common
settings (head sizes the ONNX Runtime GenAI builder accepts, a real sliding window); the caller's keyword
arguments override both. The tokenizer (`make_tokenizer`) is a byte-level BPE trained on a few hundred words,
so it needs no download; the chat template and special tokens are the caller's (ChatML by default), so template
families can be tested on the real template of their family.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The architectures slmdeploy's own integration tests convert (tests/integration/test_architectures.py), by
# model_type; `make_tiny_model` accepts any other model_type transformers knows.
ARCHITECTURES = (
    "llama",
    "qwen2",
    "qwen3",
    "phi3",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3_text",
    "granite",
    "olmo",
    "smollm3",
    "lfm2",
    "ernie4_5",
    "phi",
    "nemotron",
    "hunyuan_v1_dense",
    "gpt_oss",
    "lfm2_moe",
)
ALIASES = {"gemma3": "gemma3_text"}  # Gemma 3's text model; "gemma3" in transformers is the vision-language model
_HEAD_16 = {"head_dim": 16}
_SLIDING = {"sliding_window": 64, "query_pre_attn_scalar": 16, "head_dim": 16}
# Rotary embeddings over part of each head (Phi-2, Nemotron: half) need heads of 32 for the runtime's kernels.
_PARTIAL_ROTARY = {"num_attention_heads": 2, "num_key_value_heads": 2}
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "phi3": {"tie_word_embeddings": False, "original_max_position_embeddings": 256},
    "qwen3": _HEAD_16,
    "ernie4_5": _HEAD_16,
    "gemma": _HEAD_16,
    "gemma2": _SLIDING,
    "gemma3_text": {**_SLIDING, "layer_types": ["sliding_attention", "full_attention"]},
    "lfm2": {"layer_types": ["conv", "full_attention"], "block_dim": 64, "block_ff_dim": 128},
    "phi": _PARTIAL_ROTARY,
    "nemotron": _PARTIAL_ROTARY,
    "hunyuan_v1_dense": _HEAD_16,
    "gpt_oss": {
        **_HEAD_16,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "lfm2_moe": {
        "layer_types": ["conv", "full_attention"],
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "num_dense_layers": 1,
    },
}
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|endoftext|>", "extra": []}
CORPUS_TEXT = (
    "the quick brown fox jumps over the lazy dog paris is the capital of france what where who model language "
    "small tiny test token hello world answer question user assistant system"
)
VOCAB_SIZE = 1000
SAMPLE_TEXT = "the quick brown fox jumps over the lazy dog and paris is the capital of france"


def make_tokenizer(chat_template: str = CHATML, special: dict[str, Any] | None = None) -> Any:
    """A byte-level BPE tokenizer with `special` tokens (bos, eos, pad, extra) and `chat_template`."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = special or CHATML_TOKENS
    tokens = ["<unk>", special["pad"], special["bos"], special["eos"], *special.get("extra", [])]
    unique = list(dict.fromkeys(tokens))
    rng, words = random.Random(0), CORPUS_TEXT.split()
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=unique,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token=special["bos"],
        eos_token=special["eos"],
        pad_token=special["pad"],
        additional_special_tokens=list(unique[4:]),
    )
    fast.chat_template = chat_template
    return fast


def make_config(architecture: str, tokenizer: Any, config: Any = None, **overrides: Any) -> Any:
    """A 2-layer config of `architecture` (a model_type): hidden 64, 4 heads of 16, 2 KV heads, the tokenizer's
    vocabulary and special ids, then `TINY_OVERRIDES`, then `config` (a dict or a transformers config), then
    `overrides`."""
    from transformers import AutoConfig, PretrainedConfig

    given = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config or {})
    model_type = str(given.pop("model_type", architecture))
    model_type = ALIASES.get(model_type, model_type)
    for key in ("architectures", "transformers_version", "dtype", "torch_dtype"):
        given.pop(key, None)
    common: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
    }
    tokens = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings = common | TINY_OVERRIDES.get(model_type, {}) | given | tokens | overrides
    try:
        return AutoConfig.for_model(model_type, **settings)
    except ValueError as error:
        raise ValueError(f"no tiny model for {model_type!r}: {error}") from None


def make_tiny_model(
    folder: Path,
    architecture: str = "llama",
    chat_template: str = CHATML,
    special: Mapping[str, Any] | None = None,
    seed: int = 0,
    config: Any = None,
    **overrides: Any,
) -> Path:
    """Save a random-weight model of `architecture` (or `config`) with its tokenizer into `folder`; return it."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = make_tokenizer(chat_template, dict(special) if special else None)
    model_config = make_config(architecture, tokenizer, config, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        pad_token_id=model_config.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
