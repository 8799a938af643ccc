"""The built-in inputs: English text for fidelity and speed, questions for format and soak, edge cases."""

from __future__ import annotations

ENGLISH = (
    "The river rises in the hills to the north of the town and runs south through farmland before it reaches "
    "the sea. In spring the water is high and fast, and the old stone bridge near the market has stood against "
    "floods for more than three hundred years. Fishermen still tie their boats below the bridge in the evening.",
    "To make bread, mix flour, water, salt and yeast into a soft dough. Knead it for ten minutes until it is "
    "smooth, then leave it covered in a warm place for an hour. When it has doubled in size, shape it into a "
    "loaf, let it rise again, and bake it in a hot oven until the crust is brown and the loaf sounds hollow.",
    "Computers store numbers in binary, using only the digits zero and one. A group of eight binary digits is "
    "called a byte, and a byte can hold any whole number from zero to two hundred and fifty-five. Larger numbers "
    "use several bytes, and fractions are stored in a format that keeps a fixed number of significant digits.",
    "The meeting was moved to Thursday because several members of the team were travelling on Wednesday. "
    "Please read the attached report before then and send your comments to the project manager. We will "
    "discuss the budget first, then the schedule for the next release, and finally any other business.",
)

QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colors.",
    "Give me a short tip for staying healthy.",
    "What is 7 times 8?",
    "Write one sentence about the ocean.",
)

LONG_WORD = "pneumonoultramicroscopicsilicovolcanoconiosis" * 40

EDGE_CASES: dict[str, dict[str, str]] = {
    "empty": {"content": ""},
    "whitespace": {"content": "   \n\t  \n "},
    "overlong": {"content": ""},  # filled in from the model's context length
    "invalid_utf8": {"content": "", "raw_bytes": b"caf\xe9 \xff\xfe na\xc3\xafve \xc0\xaf question?".hex()},
    "control_characters": {"content": "\x00\x01\x07 hello \x1b[31mred\x1b[0m \x7f\x08 what is this?"},
    "long_word": {"content": LONG_WORD},
    "emoji_cjk": {"content": "こんにちは、世界！🌍🚀 你好吗？ 😀 请用一句话介绍你自己。"},  # noqa: RUF001 - the point
}
"""Inputs a deployed model must survive: each gives an answer or a clean error, never a crash or a hang."""
