"""A request's tokens as text: incremental decoding, and stop strings that are never sent.

Stop strings are matched on the text, as llama-server does: text that could still become a stop string is held back
until it cannot, and the request ends (its row freed) as soon as one matches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StopText:
    """Text pieces in, text that is safe to send out; `matched` once a stop string appeared."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.pending = ""
        self.matched = False

    def feed(self, piece: str) -> str:
        if self.matched:
            return ""
        self.pending += piece
        found = [index for index in (self.pending.find(stop) for stop in self.stops) if index >= 0]
        if found:
            self.matched = True
            out, self.pending = self.pending[: min(found)], ""
            return out
        keep = self._held_back()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.matched else self.pending), ""
        return out

    def _held_back(self) -> int:
        """The longest end of the pending text that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest


class TokenText:
    """Decodes one request's tokens as they come, skipping the end-of-sequence tokens, and applies its stops."""

    def __init__(self, tokenizer: Any, eos: frozenset[int], stops: Sequence[str]) -> None:
        self.stream = tokenizer.create_stream()
        self.eos = eos
        self.stop = StopText(stops)

    def feed(self, token: int) -> str:
        if token in self.eos:
            return ""
        return self.stop.feed(self.stream.decode(token))

    @property
    def stopped(self) -> bool:
        return self.stop.matched
