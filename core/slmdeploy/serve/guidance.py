"""Constrained output per row with llguidance (the library onnxruntime-genai's own guidance uses): before each draw the
row's grammar says which tokens may come next, and the others' logits are set to minus infinity. A JSON request is
one row like any other, so it batches with the rest."""

from __future__ import annotations

from typing import Any

from slmdeploy.serve.models import LoadedModel


class Grammar:
    """One request's matcher: `allowed` tokens now, `accept` the one drawn, `finished` when nothing may follow."""

    def __init__(self, matcher: Any, vocab: int) -> None:
        import llguidance.numpy as lln

        self.matcher, self.vocab = matcher, vocab
        self.bitmask = lln.allocate_token_bitmask(1, vocab)

    def allowed(self) -> Any:
        """A boolean mask over the vocabulary (the end-of-sequence tokens allowed once the text is complete)."""
        import llguidance.numpy as lln
        import numpy as np

        lln.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        bits = np.unpackbits(self.bitmask[0].view(np.uint8), bitorder="little")
        return bits[: self.vocab].astype(bool)

    def accept(self, token: int) -> bool:
        """Move past `token`; False if the matcher failed (its `error` says why)."""
        return bool(self.matcher.consume_token(token))

    def error(self) -> str:
        return str(self.matcher.get_error())

    def finished(self) -> bool:
        return bool(self.matcher.is_stopped())


def compile_grammar(loaded: LoadedModel, guidance: tuple[str, str]) -> Grammar:
    """A matcher for `guidance` (``json_schema`` with the schema as JSON text, or ``lark_grammar``); ValueError when
    it cannot be compiled."""
    import llguidance

    kind, text = guidance
    if kind == "json_schema":
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text)
    elif kind == "lark_grammar":
        grammar = llguidance.LLMatcher.grammar_from_lark(text)
    else:
        raise ValueError(f"unknown guidance kind {kind!r}")
    matcher = llguidance.LLMatcher(_tokenizer(loaded), grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(matcher.get_error())
    return Grammar(matcher, loaded.decoder.vocab)


def _tokenizer(loaded: LoadedModel) -> Any:
    """llguidance's view of the package's tokenizer.json, made once per model (it takes about a second)."""
    import llguidance

    if loaded.guidance_tokenizer is None:
        text = (loaded.spec.folder / "tokenizer.json").read_text(encoding="utf-8")
        loaded.guidance_tokenizer = llguidance.LLTokenizer(
            text, n_vocab=loaded.decoder.vocab, eos_token=sorted(loaded.eos)
        )
    return loaded.guidance_tokenizer
