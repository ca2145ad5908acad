"""Training config: strict keys with suggestions, key errors before value/path errors, typed
overrides, TOML round trips of every shipped config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sslspeech.cli import main
from sslspeech.errors import ConfigError
from sslspeech.training.config import check_paths, load_config, resolve_config
from sslspeech.utils.tomlconfig import format_value
from tests.training.conftest import CONFIGS

BASE = {
    "run": {"workdir": "w"},
    "data": {"manifest": "m.csv"},
    "model": {"type": "hubert_pretrain"},
}
SHIPPED = sorted(path.name for path in CONFIGS.glob("*.toml") if path.name != "demo.toml")


def test_unknown_toml_key_names_file_line_key_and_the_closest_valid_one(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[run]\nworkdir = "w"\n[data]\nmanifest = "m"\n[optim]\nlearning_rat = 1\n')
    with pytest.raises(
        ConfigError, match=r"c.toml:6: unknown key 'optim.learning_rat'.*'optim.lr'"
    ):
        load_config(config, ["model.type=spidr"])
    config.write_text('lr = 1\n[model]\ntype = "spidr"\n')
    with pytest.raises(
        ConfigError, match=r"c.toml:1: key 'lr' is outside any \[section\].*'optim.lr'"
    ):
        load_config(config)


def test_unknown_override_section_and_model_field_are_all_reported() -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config(BASE, ["optm.lr=1", "model.num_layer=2", "run.max_step=3"])
    message = str(error.value)
    assert "unknown section [optm]" in message and "'optim'" in message
    assert "'model.num_layer'" in message and "'model.num_layers'" in message
    assert "'run.max_step'" in message and "'run.max_steps'" in message


def test_key_in_the_wrong_section_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"'run.lr'.*'optim.lr'"):
        resolve_config(BASE, ["run.lr=1e-4"])


def test_model_type_typo_is_a_key_level_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"model.type.*'spidrr'.*did you mean 'spidr'"):
        resolve_config(BASE, ["model.type=spidrr", "model.num_layers=2"])


def test_key_errors_come_before_missing_keys_and_paths(tmp_path: Path) -> None:
    """A typo fails on the typo even when required keys and the data are missing."""
    config = tmp_path / "c.toml"
    config.write_text('[model]\ntype = "spidr"\n[optim]\nlrate = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrate'"):
        load_config(config)
    config.write_text('[model]\ntype = "spidr"\n')
    with pytest.raises(ConfigError, match=r"missing required key\(s\): run.workdir, data.manifest"):
        load_config(config)
    resolved = load_config(config, ["run.workdir=w", f"data.manifest={tmp_path / 'none.csv'}"])
    with pytest.raises(ConfigError, match=r"data.manifest: no such file"):
        check_paths(resolved)


def test_dry_run_with_a_typo_fails_on_the_typo_without_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["train", str(CONFIGS / "spidr_base.toml"), "optim.lrr=1e-4", "--dry-run"])
    assert status == 1
    err = capsys.readouterr().err
    assert "unknown key 'optim.lrr'" in err and "'optim.lr'" in err


def test_overrides_are_parsed_by_the_field_type() -> None:
    config = resolve_config(
        BASE,
        [
            "optim.lr=1e-4",
            "optim.betas=[0.9, 0.95]",
            "run.max_steps=12",
            "run.init_from=none",
            "data.val_manifest=/data/a=b.csv",
            "optim.dtype=bfloat16",
            "data.normalize=true",
            "model.label_rate=100",
            "model.extractor_conv_layers=[[64, 10, 5], [64, 3, 2]]",
        ],
    )
    assert config.optim.lr == 1e-4 and config.optim.betas == (0.9, 0.95)
    assert config.run.max_steps == 12 and config.run.init_from is None
    assert config.data.val_manifest == "/data/a=b.csv" and config.data.normalize is True
    assert config.model.options["label_rate"] == 100.0
    assert config.model_config().extractor_conv_layers == ((64, 10, 5), (64, 3, 2))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optim.lr=fast", r"optim.lr='fast': expected a number"),
        ("run.max_steps=1.5", r"run.max_steps must be an integer"),
        ("optim.dtype=bf16", r"one of \['float32', 'bfloat16', 'float16'\].*'bfloat16'"),
        ("optim.betas=[0.9]", r"optim.betas must have 2 items"),
        ("run.max_steps=0", r"run.max_steps must be > 0"),
        ("model.num_heads=7", r"\[model\] \(hubert_pretrain\).*divisible by num_heads"),
        ("model.mask_prob=0.5", r"model.mask_prob .* differs from masking.mask_prob"),
        ("model.normalize_input=true", r"model.normalize_input .* differs from data.normalize"),
        ("optim.lr", r"must look like section.key=value"),
    ],
)
def test_bad_values_say_what_is_expected(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        resolve_config(BASE, [override])


def test_masking_and_normalization_reach_the_model_config() -> None:
    """The checkpoint records the masks and the input standardization the run used."""
    config = resolve_config(
        BASE, ["masking.mask_prob=0.5", "masking.mask_length=4", "data.normalize=true"]
    )
    model_config = config.model_config()
    assert (model_config.mask_prob, model_config.mask_length) == (0.5, 4)
    assert model_config.normalize_input is True
    spidr = resolve_config(BASE, ["model.type=spidr", "data.normalize=false"]).model_config()
    assert spidr.normalize_input is False


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_resolve_and_round_trip_through_toml(name: str, tmp_path: Path) -> None:
    """Every config in configs/ loads, and its dump (config.toml of a run) loads back equal."""
    config = load_config(CONFIGS / name, [f"data.manifest={tmp_path / 'm.csv'}"])
    text = config.to_toml()
    assert resolve_config(tomllib.loads(text)) == config
    config.model_config()  # the model accepts its fields


def test_toml_writer_escapes_strings() -> None:
    value = 'quote " backslash \\ tab \t newline \n bell \x07 é'
    assert tomllib.loads(f"v = {format_value(value)}")["v"] == value
    nested = [[1, 2.5], [True, "x"]]
    assert tomllib.loads(f"v = {format_value(nested)}")["v"] == nested


def test_replace_applies_dotted_changes_strictly() -> None:
    config = resolve_config(BASE)
    assert config.replace(**{"run.max_steps": 7}).run.max_steps == 7
    with pytest.raises(ConfigError, match=r"unknown key 'run\.max_stepz'"):
        config.replace(**{"run.max_stepz": 7})


def test_replace_takes_values_as_they_are() -> None:
    """Values are checked by type, never re-parsed as text: a string that looks like TOML stays a
    string, None and tuples pass as themselves, a wrong type is an error naming replace()."""
    config = resolve_config(BASE)
    odd = '["not", "a list"].csv'
    changed = config.replace(
        **{"data.manifest": odd, "run.init_from": None, "optim.betas": (0.8, 0.9)}
    )
    assert changed.data.manifest == odd and changed.run.init_from is None
    assert changed.optim.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match=r"replace\(\): optim.lr must be a number; got '1e-4'"):
        config.replace(**{"optim.lr": "1e-4"})
