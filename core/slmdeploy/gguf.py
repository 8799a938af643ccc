"""The header of a GGUF model file, checked before anything reads the file: where ``[source]`` is loaded (so a bad
file is reported at its line of the project file) and again when a stage reads the model."""

from __future__ import annotations

import struct
from pathlib import Path

from slmdeploy.errors import InputError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)


def check_gguf(path: Path, where: str | None = None) -> None:
    """The file starts as a GGUF file does: magic, a version this reader knows, and tensor and metadata counts that
    a file of its size can hold (a truncated or damaged file is said to be one, not reported as a crash)."""
    with path.open("rb") as stream:
        header = stream.read(24)
    fix = "Point [source] path at a .gguf model file, or at a Hugging Face model folder."
    if header[:4] != GGUF_MAGIC:
        raise InputError(
            f"{path} is not a GGUF file (it starts with {header[:4]!r}, not {GGUF_MAGIC!r})", where=where, fix=fix
        )
    size = path.stat().st_size
    if len(header) < 24:
        raise InputError(f"{path} is cut short: {size} bytes, less than a GGUF header", where=where, fix=fix)
    version, tensors, entries = struct.unpack("<IQQ", header[4:24])
    if version not in GGUF_VERSIONS:
        raise InputError(
            f"{path} is GGUF version {version}; the versions that can be read are "
            + ", ".join(map(str, GGUF_VERSIONS)),
            where=where,
            fix="Export the model again with a current llama.cpp (convert_hf_to_gguf.py), or check that the file "
            "is complete.",
        )
    if tensors == 0 or tensors + entries > size // 8:  # every tensor and entry takes more than 8 bytes
        what = "holds no tensors" if tensors == 0 else f"counts {tensors} tensors and {entries} metadata entries"
        raise InputError(
            f"{path} is damaged or cut short: its header {what}, which a file of {size} bytes cannot be",
            where=where,
            fix="Download or export the file again and compare its size or checksum with the original.",
        )
