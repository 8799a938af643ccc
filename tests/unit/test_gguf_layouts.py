"""GGUF blocks in MatMulNBits' layouts (numpy only): nibble order, row permutation, and each type's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from slmdeploy_olive import gguf_blocks
from slmdeploy_olive.gguf_blocks import Blocks, from_ggml, permute_rows, repack_nibbles, unpack_nibbles

RNG = np.random.default_rng(0)


def ggml_nibbles(values):
    """ggml's packing of 32 4-bit values per block: byte j holds element j (low) and element j + 16 (high)."""
    return (values[..., :16] | (values[..., 16:] << 4)).astype(np.uint8)


def fp16_bytes(values):
    return np.asarray(values, dtype=np.float16).reshape(*np.shape(values), 1).view(np.uint8)


def test_repacked_nibbles_hold_consecutive_elements_in_each_byte():
    values = RNG.integers(0, 16, size=(3, 5, 32), dtype=np.uint8)
    packed = repack_nibbles(ggml_nibbles(values))
    assert packed.shape == (3, 5, 16)
    assert np.array_equal(packed & 0x0F, values[..., 0::2])
    assert np.array_equal(packed >> 4, values[..., 1::2])
    assert np.array_equal(unpack_nibbles(packed), values)


def test_row_permutation_is_transformers_reverse_permute_and_undoes_llama_cpp():
    heads, rows = 3, 12
    weights = RNG.standard_normal((rows, 7))
    half = rows // heads // 2
    transformers = weights.reshape(heads, half, 2, 7).swapaxes(2, 1).reshape(weights.shape)
    assert np.array_equal(permute_rows(weights, heads), transformers)
    llama_cpp = weights.reshape(heads, 2, half, 7).swapaxes(1, 2).reshape(weights.shape)  # convert_hf_to_gguf
    assert np.array_equal(permute_rows(llama_cpp, heads), weights)
    assert np.array_equal(permute_rows(weights[:, 0], heads), transformers[:, 0])  # any trailing shape


def test_q4_1_is_symmetric_blocks_plus_an_offset_per_block():
    q = RNG.integers(0, 16, size=(4, 2, 32), dtype=np.uint8)
    d = RNG.uniform(0.01, 0.1, size=(4, 2)).astype(np.float16)
    m = RNG.uniform(-1, 0, size=(4, 2)).astype(np.float16)
    raw = np.concatenate([fp16_bytes(d), fp16_bytes(m), ggml_nibbles(q)], axis=-1).reshape(4, -1)
    blocks = from_ggml("Q4_1", raw)
    expected = d.astype(np.float32)[..., None] * q + m.astype(np.float32)[..., None]
    assert blocks.bits == 4 and blocks.packed.shape == (4, 2, 16)
    assert np.abs(blocks.decode() - expected.reshape(4, 64)).max() <= 1e-6


def test_q4_0_is_symmetric_without_offsets():
    q = RNG.integers(0, 16, size=(2, 3, 32), dtype=np.uint8)
    d = RNG.uniform(0.01, 0.1, size=(2, 3)).astype(np.float16)
    blocks = from_ggml("Q4_0", np.concatenate([fp16_bytes(d), ggml_nibbles(q)], axis=-1).reshape(2, -1))
    expected = d.astype(np.float32)[..., None] * (q.astype(np.float32) - 8)
    assert blocks.offsets is None
    assert np.array_equal(blocks.decode(), expected.reshape(2, 96))


def test_q8_0_is_8_bit_blocks_around_the_default_zero_point():
    q = RNG.integers(-128, 128, size=(2, 3, 32)).astype(np.int8)
    d = RNG.uniform(0.01, 0.1, size=(2, 3)).astype(np.float16)
    blocks = from_ggml("Q8_0", np.concatenate([fp16_bytes(d), q.view(np.uint8)], axis=-1).reshape(2, -1))
    assert blocks.bits == 8 and blocks.packed.dtype == np.uint8 and blocks.packed.shape == (2, 3, 32)
    assert np.array_equal(blocks.packed.astype(np.int16) - 128, q)
    assert np.array_equal(blocks.decode(), (d.astype(np.float32)[..., None] * q).reshape(2, 96))


def test_concatenated_parts_fill_missing_offsets_with_zeros_and_refuse_mixed_widths():
    four = Blocks(4, np.zeros((2, 1, 16), np.uint8), np.ones((2, 1), np.float32))
    offset = Blocks(4, np.zeros((3, 1, 16), np.uint8), np.ones((3, 1), np.float32), np.full((3, 1), 0.5, np.float32))
    joined = gguf_blocks.concatenated([four, offset])
    assert joined is not None and joined.rows == 5
    assert joined.offsets[:, 0].tolist() == [0, 0, 0.5, 0.5, 0.5]
    eight = Blocks(8, np.zeros((1, 1, 32), np.uint8), np.ones((1, 1), np.float32))
    assert gguf_blocks.concatenated([four, eight]) is None


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_blocks_decode_as_the_gguf_package_dequantizes(kind):
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    qtype = GGMLQuantizationType[kind]
    weights = RNG.standard_normal((6, 64)).astype(np.float32)
    raw = quants.quantize(weights, qtype)
    assert np.abs(from_ggml(kind, raw).decode() - quants.dequantize(raw, qtype)).max() <= 1e-6


def test_q4_k_super_blocks_are_blocks_of_32_with_a_scale_and_an_offset():
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    raw = RNG.integers(0, 256, size=(6, 2, 144), dtype=np.uint8)  # any bytes are valid 6-bit scales and q
    raw[..., 0:4] = RNG.uniform(0.001, 0.02, size=(6, 2, 2)).astype(np.float16).view(np.uint8)  # d, dmin
    raw = raw.reshape(6, -1)
    blocks = from_ggml("Q4_K", raw)
    assert blocks.bits == 4 and blocks.packed.shape == (6, 16, 16) and blocks.offsets.shape == (6, 16)
    expected = quants.dequantize(raw, GGMLQuantizationType.Q4_K)
    assert np.abs(blocks.decode() - expected).max() <= 1e-6 * np.abs(expected).max()
