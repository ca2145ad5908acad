"""Shared test helpers: where the golden fixtures live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SSLSPEECH_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures (override with SSLSPEECH_FIXTURES); a missing folder is an error."""
    if not FIXTURES.is_dir():
        raise FileNotFoundError(
            f"golden fixtures not found at {FIXTURES}; set SSLSPEECH_FIXTURES to their folder"
        )
    return FIXTURES
