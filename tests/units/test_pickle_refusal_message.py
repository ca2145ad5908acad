"""The refusal of an unsafe scikit-learn k-means pickle names both ways to trust it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslspeech.errors import UnsafePickleError
from sslspeech.units.kmeans import KMeans


def test_refusal_names_the_api_argument_and_the_cli_flag(tmp_path: Path) -> None:
    """The message says `trust=True` (Python) and `--trust-pickle` (command line); nothing ran."""
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    path = tmp_path / "km.pkl"
    path.write_bytes(
        b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."
    )
    with pytest.raises(UnsafePickleError) as raised:
        KMeans.load(path)
    message = str(raised.value)
    assert "trust=True" in message and "--trust-pickle" in message and str(path) in message
    assert not marker.exists()
