"""ZeroSpeech item files and the frame slicing of fastabx (exact decimal arithmetic)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from sslspeech.errors import DataError

ITEM_COLUMNS = ("#file", "onset", "offset", "#phone", "prev-phone", "next-phone", "speaker")
HALF = Decimal("0.5")


@dataclass(frozen=True)
class Items:
    """The tokens of an item file, one entry per line (row `i` is line `i + 2` of the file)."""

    fileids: list[str]
    onsets: list[Decimal]
    offsets: list[Decimal]
    phones: list[str]
    prev_phones: list[str]
    next_phones: list[str]
    speakers: list[str]
    source: str = "<items>"

    def __len__(self) -> int:
        return len(self.fileids)


def read_items(path: str | os.PathLike[str]) -> Items:
    """Read a ZeroSpeech `.item` file: `#file onset offset #phone prev-phone next-phone speaker`.

    Columns are space separated and found by name in the header, so their order is free and
    extra columns are ignored. Times stay exact decimals (fastabx reads them as decimals too).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot read item file ({error})") from None
    if not lines:
        raise DataError(f"{path}: empty item file (expected a header: {' '.join(ITEM_COLUMNS)})")
    header = lines[0].split()
    missing = [name for name in ITEM_COLUMNS if name not in header]
    if missing:
        raise DataError(
            f"{path}:1: header lacks column(s) {', '.join(missing)} "
            f"(expected: {' '.join(ITEM_COLUMNS)})"
        )
    where = [header.index(name) for name in ITEM_COLUMNS]
    columns: list[list[str]] = [[] for _ in ITEM_COLUMNS]
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{path}:{number}: {len(fields)} fields, the header has {len(header)}: {line!r}"
            )
        for column, position in zip(columns, where, strict=True):
            column.append(fields[position])
    return Items(
        fileids=columns[0],
        onsets=[_decimal(value, path, "onset", row) for row, value in enumerate(columns[1])],
        offsets=[_decimal(value, path, "offset", row) for row, value in enumerate(columns[2])],
        phones=columns[3],
        prev_phones=columns[4],
        next_phones=columns[5],
        speakers=columns[6],
        source=str(path),
    )


def _decimal(value: str, path: Path, column: str, row: int) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise DataError(f"{path}: row {row} (line {row + 2}): {column} {value!r} is not a number")
    return number


def parse_frequency(frequency: int | float | str | Decimal) -> Decimal:
    """The frame rate as an exact decimal; a float goes through its shortest repr (50.0 -> 50)."""
    if isinstance(frequency, bool):
        raise DataError(f"frequency must be a positive number of Hz, got {frequency!r}")
    try:
        value = Decimal(str(frequency))
    except InvalidOperation:
        raise DataError(f"frequency must be a positive number of Hz, got {frequency!r}") from None
    if not value.is_finite() or value <= 0:
        raise DataError(f"frequency must be a positive number of Hz, got {frequency!r}")
    return value


def frame_bounds(
    onsets: Sequence[Decimal], offsets: Sequence[Decimal], frequency: int | float | str | Decimal
) -> tuple[np.ndarray, np.ndarray]:
    """Frames `[start, end[` whose centre `(i + 1/2) / f` lies in `[onset, offset]` (fastabx rule).

    `start = ceil(onset * f - 1/2)`, `end = floor(offset * f - 1/2) + 1`, in exact decimals.
    """
    f = parse_frequency(frequency)
    starts = np.array([math.ceil(onset * f - HALF) for onset in onsets], dtype=np.int64)
    ends = np.array([math.floor(offset * f - HALF) + 1 for offset in offsets], dtype=np.int64)
    return starts, ends
