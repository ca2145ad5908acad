"""Shared fixtures of the evaluation tests: the ABX golden fixture and its parsed item file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sslspeech.evaluation.items import Items, read_items


@pytest.fixture(scope="session")
def abx_dir(fixtures_dir: Path) -> Path:
    """../shared/fixtures/abx/synthetic_phones (fastabx 0.9.0 golden numbers)."""
    return fixtures_dir / "abx" / "synthetic_phones"


@pytest.fixture(scope="session")
def abx_expected(abx_dir: Path) -> dict[str, Any]:
    return json.loads((abx_dir / "expected.json").read_text())


@pytest.fixture(scope="session")
def abx_items(abx_dir: Path) -> Items:
    return read_items(abx_dir / "phones.item")
