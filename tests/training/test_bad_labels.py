"""Training data that cannot fit the model is refused where the labels are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslspeech.errors import DataError
from sslspeech.training.config import load_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.trainer import Trainer
from tests.training.conftest import CONFIGS, small_run


def test_units_beyond_num_classes_name_the_manifest_and_key(
    tmp_path: Path, tone_manifest: Path
) -> None:
    """`model.num_classes=2` with tone units up to 7 names the manifest, a fileid and the key."""
    overrides = small_run(tmp_path, tone_manifest, "model.num_classes=2")
    with pytest.raises(DataError) as raised:
        Trainer(
            load_config(CONFIGS / "tiny_hubert.toml", overrides), resolve_environment("cpu", {})
        )
    message = str(raised.value)
    assert message.startswith(f"{tone_manifest}: 'utt") and "model.num_classes=2" in message


def test_header_only_manifest_with_units_is_called_empty(tmp_path: Path) -> None:
    """A header-only manifest with a units column is reported as empty, not as unit-less."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("fileid,path,num_samples,units\n")
    overrides = small_run(tmp_path, manifest)
    with pytest.raises(DataError, match="the manifest lists no utterances") as raised:
        Trainer(
            load_config(CONFIGS / "tiny_hubert.toml", overrides), resolve_environment("cpu", {})
        )
    assert "units column" not in str(raised.value)
