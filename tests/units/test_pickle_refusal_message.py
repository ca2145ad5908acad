"""Unsafe or hostile scikit-learn k-means files: clear refusals, bounded inflation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslspeech.errors import DataError, UnsafePickleError
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


def test_compressed_kmeans_file_cannot_inflate_without_bound(tmp_path: Path) -> None:
    """A 64 MiB run of zeros gzipped into a few hundred KB is refused before inflating fully."""
    import gzip

    path = tmp_path / "km.bin"
    path.write_bytes(gzip.compress(bytes(2**26), compresslevel=1))
    with pytest.raises(DataError, match=r"inflates beyond 64x its \d+ bytes") as raised:
        KMeans.load(path)
    assert str(path) in str(raised.value)
