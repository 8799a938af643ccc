"""The register stage's smoke check: an answer with no text fails the registration (no Foundry Local needed)."""

from __future__ import annotations

import pytest

from slmdeploy.errors import StageError
from slmdeploy_foundry.placement import check_answer


@pytest.mark.parametrize(("answer", "tokens"), [("", 0), ("", 1), ("", 5)])
def test_an_empty_answer_fails(answer, tokens):
    usage = {"prompt_tokens": 9, "completion_tokens": tokens}
    with pytest.raises(StageError, match=f"its answer to 'Hi' is empty \\({tokens} tokens, finish reason stop\\)"):
        check_answer("m:1", "Hi", answer, "stop", usage)


@pytest.mark.parametrize("answer", ["Paris.", "\n\n"])
def test_an_answer_with_text_passes(answer):
    check_answer("m:1", "Hi", answer, "stop", {"prompt_tokens": 9, "completion_tokens": 3})
