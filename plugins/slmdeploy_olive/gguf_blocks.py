"""A GGUF tensor's quantization blocks in the layouts onnxruntime's block-quantized operators read.

ggml stores a weight [N, K] row by row (one row per output feature), each row as blocks of 32 weights:

- Q4_0: fp16 scale d, 16 bytes of 4-bit q;           w = d * (q - 8)
- Q4_1: fp16 scale d, fp16 minimum m, 16 bytes of q;  w = d * q + m
- Q8_0: fp16 scale d, 32 int8 q;                      w = d * q
- Q4_K: super-blocks of 256: fp16 d and dmin, 6-bit scale sc and minimum mn per block of 32, 4-bit q;
  w = d*sc * q - dmin*mn, the same form as Q4_1 with scale d*sc and minimum -dmin*mn

MatMulNBits (B as [N, K/32, bytes]) and GatherBlockQuantized hold the same blocks: 4-bit symmetric
w = scale * (q - 8), 8-bit with the default zero point 128 w = scale * (u - 128), u = q + 128. Q4_1's minimum
does not fit the symmetric form, so it is carried as an offset per block: w = d * (q - 8) + (m + 8d), the
offset term added to the operator's output as (block sums of x) @ offsets. numpy only.
"""

from __future__ import annotations

from typing import Any

import attrs

BLOCK = 32
# Bytes per block of each carried ggml type: scale (and minimum) as fp16, then the quantized values.
LAYOUTS = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34, "Q4_K": 144}


@attrs.frozen
class Blocks:
    """One weight's blocks as an operator stores them: `packed` uint8 [N, K/32, 32*bits/8] (MatMulNBits' B),
    `scales` float32 [N, K/32], `offsets` float32 [N, K/32] added per block, or None where all are zero."""

    bits: int
    packed: Any
    scales: Any
    offsets: Any = None

    @property
    def rows(self) -> int:
        return int(self.packed.shape[0])

    def decode(self) -> Any:
        """The float32 weight [N, K] these blocks hold (the operator's arithmetic, for checks)."""
        import numpy as np

        values = unpack_nibbles(self.packed) if self.bits == 4 else self.packed
        centred = values.astype(np.float32) - np.float32(8 if self.bits == 4 else 128)
        weight = centred * self.scales[..., None]
        if self.offsets is not None:
            weight = weight + self.offsets[..., None]
        return weight.reshape(self.rows, -1)


def from_ggml(kind: str, raw: Any) -> Blocks:
    """The blocks of a ggml tensor of type `kind` whose raw bytes are uint8 [N, bytes per row]."""
    import numpy as np

    if kind == "Q4_K":
        return _q4_k(np.ascontiguousarray(raw).reshape(raw.shape[0], -1, LAYOUTS[kind]))
    size = LAYOUTS[kind]
    blocks = np.ascontiguousarray(raw).reshape(raw.shape[0], -1, size)
    scales = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        packed = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return Blocks(8, packed, scales)
    packed = repack_nibbles(blocks[..., size - 16 :])
    if kind == "Q4_0":
        return Blocks(4, packed, scales)
    minimums = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    return Blocks(4, packed, scales, minimums + np.float32(8) * scales)


def _q4_k(blocks: Any) -> Blocks:
    """Q4_K super-blocks uint8 [N, K/256, 144] as blocks of 32 with a scale and an offset each."""
    import numpy as np

    rows = blocks.shape[0]
    d, dmin = (blocks[..., at : at + 2].copy().view(np.float16).astype(np.float32) for at in (0, 2))
    sc, mn = _k_scales(blocks[..., 4:16])
    nibbles = blocks[..., 16:].reshape(rows, -1, 4, 1, 32)  # 4 chunks of 32 bytes: low nibbles, then high
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=3).reshape(rows, -1, BLOCK)
    scales = (d * sc).reshape(rows, -1)
    minimums = -(dmin * mn).reshape(rows, -1)
    return Blocks(4, pack_nibbles(values), scales, minimums + np.float32(8) * scales)


def _k_scales(packed: Any) -> tuple[Any, Any]:
    """The 8 six-bit scales and minimums packed in Q4_K's 12 bytes, float32 [..., 8] each (as ggml unpacks)."""
    import numpy as np

    low, high, mixed = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([low & 0x3F, (mixed & 0x0F) | ((low >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([high & 0x3F, (mixed >> 4) | ((high >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def repack_nibbles(ggml_bytes: Any) -> Any:
    """ggml packs elements j and j+16 of a block into byte j (low, high); MatMulNBits wants 2i and 2i+1 in byte
    i. uint8 [..., 16] -> uint8 [..., 16]."""
    import numpy as np

    return pack_nibbles(np.concatenate([ggml_bytes & 0x0F, ggml_bytes >> 4], axis=-1))


def pack_nibbles(values: Any) -> Any:
    """4-bit values uint8 [..., 32] in order -> MatMulNBits' bytes [..., 16] (2i low, 2i+1 high)."""
    import numpy as np

    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: Any) -> Any:
    """MatMulNBits' bytes [..., 16] -> the 32 values of each block in order, uint8 [..., 32]."""
    import numpy as np

    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def permute_rows(array: Any, heads: int) -> Any:
    """transformers' GGUF loader undoes llama.cpp's rotary permutation of attn_q / attn_k rows (per head, the
    two interleaved halves); the blocks' rows must move the same way. Works on any [N, ...] array."""
    half = array.shape[0] // heads // 2
    grouped = array.reshape(heads, half, 2, *array.shape[1:])
    return grouped.swapaxes(1, 2).reshape(array.shape)


def permuted(blocks: Blocks, heads: int) -> Blocks:
    offsets = None if blocks.offsets is None else permute_rows(blocks.offsets, heads)
    return Blocks(blocks.bits, permute_rows(blocks.packed, heads), permute_rows(blocks.scales, heads), offsets)


def concatenated(parts: list[Blocks]) -> Blocks | None:
    """Blocks of weights stacked along N (q, k, v fused into one MatMul), or None if their bit widths differ."""
    import numpy as np

    if len({part.bits for part in parts}) != 1:
        return None
    offsets = None
    if any(part.offsets is not None for part in parts):
        offsets = np.concatenate([_offsets_or_zeros(part) for part in parts])
    return Blocks(
        parts[0].bits,
        np.concatenate([part.packed for part in parts]),
        np.concatenate([part.scales for part in parts]),
        offsets,
    )


def _offsets_or_zeros(part: Blocks) -> Any:
    import numpy as np

    return part.offsets if part.offsets is not None else np.zeros_like(part.scales)
