"""Item files and fastabx's frame slicing (closed interval on frame centres, exact decimals)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from sslspeech.errors import DataError
from sslspeech.evaluation.items import Items, frame_bounds, parse_frequency, read_items


def test_fixture_token_lengths(abx_items: Items) -> None:
    """The fixture README's counts: 1023 tokens; 2..43 frames at 100 Hz (none single), 1..22
    frames at 50 Hz (21 single-frame tokens)."""
    assert len(abx_items) == 1023
    for frequency, low, high, singles in ((100, 2, 43, 0), (50, 1, 22, 21)):
        starts, ends = frame_bounds(abx_items.onsets, abx_items.offsets, frequency)
        lengths = ends - starts
        assert (lengths.min(), lengths.max(), int((lengths == 1).sum())) == (low, high, singles)


def test_closed_interval_on_frame_centres() -> None:
    """A frame counts when its centre (i + 1/2)/f lies in [onset, offset], both ends included."""
    onsets = [Decimal("0.005"), Decimal("0.0051"), Decimal("0.01")]
    offsets = [Decimal("0.025"), Decimal("0.0249"), Decimal("0.0149")]
    starts, ends = frame_bounds(onsets, offsets, 100)
    # centres at 0.005, 0.015, 0.025, ...
    assert starts.tolist() == [0, 1, 1]
    assert ends.tolist() == [3, 2, 1]  # the last token has no frame (end <= start)


def test_frequency_parsing() -> None:
    """Frequencies are exact decimals; a float goes through its repr; nonsense is rejected."""
    assert parse_frequency(50) == Decimal(50)
    assert parse_frequency("12.5") == Decimal("12.5")
    assert parse_frequency(50.0) == Decimal("50.0")
    for bad in (0, -1, "abc", True):
        with pytest.raises(DataError):
            parse_frequency(bad)


def test_read_items_by_column_name(tmp_path: Path) -> None:
    """Columns are found by header name (order free); bad lines name the line number."""
    path = tmp_path / "a.item"
    path.write_text("speaker #file offset onset #phone prev-phone next-phone\ns1 f 0.2 0.1 a b c\n")
    items = read_items(path)
    assert items.fileids == ["f"] and items.speakers == ["s1"]
    assert (items.onsets[0], items.offsets[0]) == (Decimal("0.1"), Decimal("0.2"))
    path.write_text("#file onset offset #phone prev-phone next-phone speaker\nf 0.1 x a b c s\n")
    with pytest.raises(DataError, match="line 2"):
        read_items(path)
    path.write_text("#file onset offset #phone speaker\n")
    with pytest.raises(DataError, match="prev-phone"):
        read_items(path)


def test_bounds_are_integers(abx_items: Items) -> None:
    starts, ends = frame_bounds(abx_items.onsets[:3], abx_items.offsets[:3], "50")
    assert starts.dtype == np.int64 and ends.dtype == np.int64
