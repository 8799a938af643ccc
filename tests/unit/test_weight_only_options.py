"""[quantize] algorithm = "gptq" / "hqq": the combinations the olive quantizer refuses before any work, and the
calibration file's errors, each a ConfigError that names the key."""

from __future__ import annotations

import pytest

from slmdeploy.plugin import ConfigError
from slmdeploy_olive.quantize import OliveQuantizer, QuantizeOptions
from slmdeploy_olive.weight_only import read_calibration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "gptq", "calibration": "texts.txt", "precision": "int8"}, "algorithm gptq makes int4 only"),
        ({"algorithm": "hqq", "precision": "int8"}, "algorithm hqq makes int4 only"),
        ({"algorithm": "gptq"}, "algorithm gptq needs calibration text"),
    ],
)
def test_combinations_that_cannot_be_honoured_are_refused(options, message):
    with pytest.raises(ConfigError, match=message) as refused:
        OliveQuantizer.check(QuantizeOptions(**options))
    assert refused.value.where == "[quantize]"


@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "hqq"},
        {"algorithm": "hqq", "keep_int8": ["lm_head"], "quantize_embeddings": False},
        {"algorithm": "gptq", "calibration": "texts.txt", "block_size": 128, "symmetric": False},
        {"algorithm": "gptq", "calibration": "texts.txt", "precision": "fp32"},  # nothing to quantize
    ],
)
def test_what_can_be_honoured_is_accepted(options):
    OliveQuantizer.check(QuantizeOptions(**options))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
        (b"abc\x00def", "holds NUL bytes"),
        (b"\n\n  \n\n", "holds no text"),
    ],
)
def test_a_bad_calibration_file_names_the_file_and_the_key(tmp_path, content, message):
    file = tmp_path / "calibration.txt"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as refused:
        read_calibration(file)
    assert str(file) in str(refused.value) and refused.value.where == "[quantize] calibration"


def test_calibration_passages_are_separated_by_blank_lines(tmp_path):
    file = tmp_path / "calibration.txt"
    file.write_text("First passage,\nstill the first.\n\n\nSecond one.\n  \n", encoding="utf-8")
    assert read_calibration(file) == ["First passage,\nstill the first.", "Second one."]
