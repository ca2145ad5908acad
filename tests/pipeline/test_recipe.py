"""Recipe TOML: strict keys with suggestions, overrides, relative paths, and the stage lists of
the HuBERT, start-from-checkpoint and SpidR recipes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sslspeech.errors import ConfigError
from sslspeech.pipeline.recipe import load_recipe, recipe_to_dict
from sslspeech.pipeline.recipes import build_stages
from sslspeech.utils.tomlconfig import dump_toml

REPO = Path(__file__).resolve().parents[2]

BASE = """
run_dir = "out"
[corpus]
synthetic = true
speakers = 2
utterances = 3
[it1]
config = "train.toml"
[it2]
config = "train.toml"
overrides = {"run.max_steps" = 5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_paths_are_relative_to_the_recipe_and_overrides_apply(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE), ["mfcc.k=7", "it1.overrides.optim.lr=0.01"])
    assert recipe.run_dir == tmp_path / "out"
    assert recipe.it1.config == tmp_path / "train.toml"
    assert recipe.mfcc.k == 7
    assert recipe.it1.overrides == {"optim.lr": 0.01}
    assert recipe.it2 is not None and recipe.it2.overrides == {"run.max_steps": 5}


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'mfcc\.kk'.*did you mean 'mfcc\.k'"):
        load_recipe(write(tmp_path, BASE + "[mfcc]\nkk = 3\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'itrations'.*did you mean 'iterations'"):
        load_recipe(write(tmp_path, "itrations = 1\n" + BASE))
    with pytest.raises(ConfigError, match=r"unknown key 'corpus\.speaker'.*'corpus\.speakers'"):
        load_recipe(write(tmp_path, BASE), ["corpus.speaker=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mfcc.k=0", "k must be positive"),
        ("mfcc.k='ten'", r"mfcc\.k must be an integer; got 'ten'"),
        ("kind='wav2vec'", "must be one of"),
        ("iterations=3", "iterations must be 1 or 2"),
        ("corpus.manifest='x.csv'", "exactly one of"),
    ],
)
def test_bad_values_are_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, BASE), [override])


def test_missing_required_table_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"missing required key.*it1"):
        load_recipe(write(tmp_path, "[corpus]\nsynthetic = true\n"))


def test_resolved_recipe_dumps_as_toml_that_loads_back(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE))
    text = dump_toml(recipe_to_dict(recipe))
    assert tomllib.loads(text)["it2"]["overrides"] == {"run.max_steps": 5}
    copy = tmp_path / "copy" / "recipe.toml"
    copy.parent.mkdir()
    copy.write_text(text)
    assert load_recipe(copy) == recipe


def names(recipe_text: str, tmp_path: Path, overrides: list[str] | None = None) -> list[str]:
    recipe = load_recipe(write(tmp_path, recipe_text), overrides or [])
    return [stage.name for stage in build_stages(recipe, tmp_path / "run")]


def test_hubert_recipe_stages_follow_the_issue_order(tmp_path):
    assert names(BASE, tmp_path) == [
        "corpus",
        "split",
        "mfcc.features",
        "mfcc.abx",
        "mfcc.kmeans",
        "mfcc.transcribe",
        "mfcc.quality",
        "it1.merge",
        "it1.train",
        "it1.validate",
        "it1.abx",
        "it1.features",
        "it1.kmeans",
        "it1.transcribe",
        "it1.quality",
        "it2.merge",
        "it2.train",
        "it2.validate",
        "it2.abx",
    ]


def test_start_from_checkpoint_and_layer(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    text = BASE + '[start]\ncheckpoint = "model.pt"\nlayer = 6\n'
    assert names(text, tmp_path, ["iterations=1"])[:8] == [
        "corpus",
        "split",
        "start.features",
        "start.kmeans",
        "start.transcribe",
        "start.quality",
        "it1.merge",
        "it1.train",
    ]
    without_layer = names(BASE + '[start]\ncheckpoint = "model.pt"\n', tmp_path)
    assert without_layer[2:4] == ["start.abx", "start.features"]


def test_single_spidr_run(tmp_path):
    assert names(BASE, tmp_path, ["kind='spidr'", "iterations=1"]) == [
        "corpus",
        "split",
        "mfcc.features",
        "mfcc.abx",
        "mfcc.kmeans",
        "mfcc.transcribe",
        "mfcc.quality",
        "it1.train",
        "it1.validate",
        "it1.abx",
        "it1.features",
        "it1.kmeans",
        "it1.transcribe",
        "it1.quality",
    ]


def test_manifest_without_item_file_needs_a_fixed_layer(tmp_path):
    (tmp_path / "m.csv").write_text("fileid,path,num_samples\n")
    text = BASE.replace("synthetic = true", 'manifest = "m.csv"')
    with pytest.raises(ConfigError, match=r"it1: no ABX item file.*\[it1\] layer = 6"):
        names(text, tmp_path)
    stages = names(text, tmp_path, ["it1.layer=3"])
    assert "it1.abx" not in stages and "it1.features" in stages


def test_the_demo_recipe_is_valid():
    recipe = load_recipe(REPO / "configs" / "demo.toml")
    assert recipe.kind == "hubert" and recipe.iterations == 2
    assert recipe.corpus.synthetic
    assert recipe.it1.config.is_file()


def test_training_overrides_are_checked_when_the_pipeline_starts(tmp_path, capsys):
    """A wrong `itN.overrides` key or value fails `pipeline run` before any stage runs, and the
    error names the recipe file and the recipe key (not "command line")."""
    from sslspeech.cli import main

    tiny = REPO / "configs" / "tiny_hubert.toml"
    recipe = write(
        tmp_path,
        'run_dir = "out"\niterations = 2\n[corpus]\nsynthetic = true\n'
        f'[it1]\nconfig = "{tiny}"\n[it2]\nconfig = "{tiny}"\noverrides = {{"optim.lrr" = 1}}\n',
    )
    assert main(["pipeline", "run", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}: [it2] training config {tiny}" in err
    assert "it2.overrides: unknown key 'optim.lrr'; did you mean 'optim.lr'?" in err
    assert "command line" not in err
    assert not (tmp_path / "out").exists()
    assert main(["pipeline", "run", str(recipe), "it1.overrides.optim.lr='fast'"]) == 1
    err = capsys.readouterr().err
    assert f"{recipe}: [it1] training config" in err
    assert "it1.overrides: optim.lr must be a number; got 'fast'" in err
