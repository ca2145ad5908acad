"""`pipeline run` checks the files a recipe names before planning any stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslspeech.errors import ConfigError
from sslspeech.pipeline.recipe import load_recipe
from sslspeech.pipeline.run import run_recipe

RECIPE = """
run_dir = "out"
[corpus]
manifest = "missing.csv"
[it1]
config = "train.toml"
[it2]
config = "train.toml"
"""


def test_missing_manifest_is_named_not_the_abx_item_file(tmp_path: Path) -> None:
    """A recipe whose manifest is missing says so (key and path), before any stage runs and
    before the layer choice of it1 asks for an ABX item file."""
    (tmp_path / "train.toml").write_text("")
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    with pytest.raises(ConfigError) as raised:
        run_recipe(load_recipe(path))
    message = str(raised.value)
    assert message.startswith(f"[corpus] manifest = {tmp_path / 'missing.csv'}: no such file")
    assert "item" not in message
    assert not (tmp_path / "out").exists()


def test_missing_training_config_is_named(tmp_path: Path) -> None:
    """The same check covers the training config an iteration names."""
    (tmp_path / "m.csv").write_text("fileid,path,num_samples\n")
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.replace("missing.csv", "m.csv"))
    with pytest.raises(ConfigError, match=r"^\[it1\] config = .*train\.toml: no such file"):
        run_recipe(load_recipe(path, ["it1.layer=3"]))
