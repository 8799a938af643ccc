"""A model folder's tokenizer files read without transformers: vocabulary, special tokens, chat template
rendering (the way transformers renders it: sandboxed jinja2, trimmed blocks)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from slmdeploy.errors import StageError

SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class TokenizerFiles:
    """``tokenizer.json`` and ``tokenizer_config.json`` of a model folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise StageError(f"{folder} has no tokenizer.json", fix="Save the tokenizer with the model (fast format).")
        data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
        config_file = folder / "tokenizer_config.json"
        self.config: dict[str, Any] = (
            json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        )
        self.vocab: dict[str, int] = _vocab(data.get("model", {}))
        for token in data.get("added_tokens", []):
            self.vocab[token["content"]] = int(token["id"])
        for token_id, token in (self.config.get("added_tokens_decoder") or {}).items():
            self.vocab.setdefault(token["content"], int(token_id))
        self.by_id = {token_id: token for token, token_id in self.vocab.items()}

    @property
    def special_tokens(self) -> dict[str, str]:
        """bos_token, eos_token, pad_token, unk_token as strings (what chat templates refer to)."""
        found = {}
        for key in SPECIAL_KEYS:
            value = self.config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                found[key] = value
        return found

    @property
    def eos_id(self) -> int | None:
        eos = self.special_tokens.get("eos_token")
        return self.token_id(eos) if eos else None

    def token_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def token(self, token_id: int) -> str | None:
        return self.by_id.get(token_id)


def _vocab(model: dict[str, Any]) -> dict[str, int]:
    vocab = model.get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [piece, score] pairs, the id is the position
        return {piece: index for index, (piece, _) in enumerate(vocab)}
    return {str(token): int(token_id) for token, token_id in vocab.items()}


def render_chat_template(
    template: str, messages: list[dict[str, str]], special: dict[str, str], add_generation_prompt: bool
) -> str:
    """Render a jinja chat template as transformers' ``apply_chat_template(tokenize=False)`` does."""
    import jinja2

    try:
        rendered: str = _compile(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=None, documents=None, **special
        )
        return rendered
    except jinja2.TemplateError as error:
        raise StageError(
            f"the tokenizer's chat_template fails to render: {error}",
            fix="Fix the chat_template in tokenizer_config.json (or chat_template.jinja).",
        ) from None


@cache
def _compile(template: str) -> Any:
    import jinja2
    import jinja2.ext
    import jinja2.sandbox

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(template)
