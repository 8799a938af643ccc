"""Tiny random-weight Hugging Face models, made offline in a second, for testing stages on every architecture.

The tokenizer is a byte-level BPE trained on a few hundred words, so it needs no download; the chat
template and special tokens are the caller's (ChatML by default), so template families can be tested on
the real template of their family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARCHITECTURES = ("llama", "qwen2", "qwen3", "phi3", "mistral")
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


def make_config(architecture: str, tokenizer: Any, **overrides: Any) -> Any:
    """A 2-layer config of `architecture`: hidden 64, 4 heads of 16 (the builder needs head sizes of 16k)."""
    from transformers import LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": True,
    }
    if architecture == "phi3":  # Phi-3 does not tie; the builder wants equal original and current lengths
        common |= {"tie_word_embeddings": False, "original_max_position_embeddings": 256}
    if architecture == "qwen3":
        common["head_dim"] = 16
    classes = {
        "llama": LlamaConfig,
        "qwen2": Qwen2Config,
        "qwen3": Qwen3Config,
        "phi3": Phi3Config,
        "mistral": MistralConfig,
    }
    if architecture not in classes:
        raise ValueError(f"no tiny model for {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    return classes[architecture](**(common | overrides))


def make_tiny_model(
    folder: Path,
    architecture: str = "llama",
    chat_template: str = CHATML,
    special: dict[str, Any] | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Save a random-weight model of `architecture` with its tokenizer into `folder`; return `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = make_tokenizer(chat_template, special)
    config = make_config(architecture, tokenizer, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
