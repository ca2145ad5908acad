"""The safetensors format read and written with torch alone (no `safetensors` package needed).

Layout: 8-byte little-endian header size, a JSON header mapping each name to its dtype, shape
and byte range (plus an optional `__metadata__` of strings), then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from sslspeech.errors import DataError
from sslspeech.utils.fileio import atomic_open

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str], int]:
    """Return (tensor entries, metadata, data offset) of a safetensors file."""
    path = Path(path)
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise DataError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", prefix)
        if size > _MAX_HEADER:
            raise DataError(f"{path}: not a safetensors file (header size {size} is implausible)")
        try:
            header = json.loads(handle.read(size))
        except ValueError as error:
            raise DataError(f"{path}: not a safetensors file (bad JSON header: {error})") from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + size


def load_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file (CPU)."""
    tensors, _, offset = read_header(path)
    data = Path(path).read_bytes()
    out: dict[str, torch.Tensor] = {}
    for name, entry in tensors.items():
        dtype_name = entry["dtype"]
        if dtype_name not in _DTYPES:
            raise DataError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        begin, end = entry["data_offsets"]
        raw = bytearray(data[offset + begin : offset + end])
        flat = torch.frombuffer(raw, dtype=_DTYPES[dtype_name]) if raw else torch.empty(0)
        out[name] = flat.to(_DTYPES[dtype_name]).reshape(entry["shape"])
    return out


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `__metadata__` string map of a safetensors file."""
    return read_header(path)[1]


def save_file(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors (moved to CPU, made contiguous) atomically in the safetensors format."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: list[bytes] = []
    position = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.dtype not in _NAMES:
            raise DataError(f"cannot save tensor {name!r}: unsupported dtype {tensor.dtype}")
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [position, position + len(blob)],
        }
        blobs.append(blob)
        position += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as the spec recommends
    with atomic_open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)
