"""The safetensors format read and written with torch alone (no `safetensors` package needed).

Layout: 8-byte little-endian header size, a JSON header mapping each name to its dtype, shape
and byte range (plus an optional `__metadata__` of strings), then the raw little-endian data.
"""

from __future__ import annotations

import json
import math
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
    """Return (tensor entries, metadata, data offset) of a safetensors file, every entry checked
    against the file (known dtype, non-negative shape, in-bounds non-overlapping byte ranges
    whose length matches the shape) before anything is allocated for it."""
    path = Path(path)
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise DataError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", prefix)
        if size > min(_MAX_HEADER, file_size - 8):
            raise DataError(
                f"{path}: not a safetensors file (header size {size} is beyond the file's "
                f"{file_size} bytes or the {_MAX_HEADER}-byte limit)"
            )
        try:
            header = json.loads(handle.read(size))
        except ValueError as error:
            raise DataError(f"{path}: not a safetensors file (bad JSON header: {error})") from None
    if not isinstance(header, dict):
        raise DataError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise DataError(f"{path}: __metadata__ must map strings to strings; got {metadata!r}")
    ranges = sorted((_checked_range(path, name, entry), name) for name, entry in header.items())
    previous_end, previous = 0, ""
    for (begin, end), name in ranges:
        if begin < previous_end:
            raise DataError(f"{path}: tensors {previous!r} and {name!r} overlap in the file")
        previous_end, previous = end, name
    if previous_end > file_size - 8 - size:
        raise DataError(
            f"{path}: tensor {previous!r} ends at data byte {previous_end}, past the end of the "
            f"file ({file_size - 8 - size} data bytes); the file is truncated or corrupt"
        )
    return header, metadata, 8 + size


def _checked_range(path: Path, name: str, entry: object) -> tuple[int, int]:
    """The [begin, end) data range of one header entry, after checking its fields."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise DataError(f"{where} must be an object with exactly dtype, shape and data_offsets")
    if entry["dtype"] not in _DTYPES:
        raise DataError(
            f"{where} has unsupported dtype {entry['dtype']!r}; expected one of {sorted(_DTYPES)}"
        )
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise DataError(f"{where}: shape must be a list of non-negative integers; got {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets)):
        raise DataError(f"{where}: data_offsets must be [begin, end] >= 0; got {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * _DTYPES[entry["dtype"]].itemsize
    if end - begin != expected:
        raise DataError(
            f"{where}: data_offsets {offsets} span {end - begin} bytes, but shape {shape} of "
            f"{entry['dtype']} needs {expected}"
        )
    return begin, end


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file (CPU), each read straight into its own buffer."""
    tensors, _, offset = read_header(path)
    out: dict[str, torch.Tensor] = {}
    with Path(path).open("rb") as handle:
        for name, entry in tensors.items():
            dtype = _DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            raw = bytearray(end - begin)
            handle.seek(offset + begin)
            if handle.readinto(raw) != len(raw):
                raise DataError(f"{path}: tensor {name!r} is truncated (the file changed?)")
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            out[name] = flat.reshape(entry["shape"])
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
