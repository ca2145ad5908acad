"""The model registry is the one list of model types: classes, config classes and objectives
come from it, and an unknown type is an error naming the known ones (never a fall-through)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sslspeech.errors import CheckpointError, ConfigError, UnknownModelTypeError
from sslspeech.interop.native import save_directory
from sslspeech.interop.registry import KnownCheckpoint
from sslspeech.models import load_model
from sslspeech.models.registry import MODELS, TRAINABLE_TYPES, model_spec
from sslspeech.training import config as train_config
from sslspeech.training.objectives import OBJECTIVES, build_objective


@pytest.mark.parametrize("model_type", list(MODELS))
def test_each_spec_names_a_class_of_its_type(model_type: str) -> None:
    """The class records the registry key as its `model_type`; its config class is the spec's."""
    spec = model_spec(model_type)
    assert spec.model_class.model_type == model_type
    assert spec.model_class.__name__ == spec.class_name
    assert spec.config_class is spec.model_class.config_class
    assert spec.objective is None or spec.objective in OBJECTIVES


def test_the_training_config_and_the_objectives_read_the_registry() -> None:
    """`[model] type` accepts exactly the types with an objective; each gets that objective."""
    assert train_config.MODEL_TYPES == TRAINABLE_TYPES == ("hubert_pretrain", "spidr", "dinosr")
    for model_type in TRAINABLE_TYPES:
        assert train_config.model_config_class(model_type) is model_spec(model_type).config_class
    model = SimpleNamespace(config=SimpleNamespace(freeze_step=None, pred_nomask_weight=0.0))
    for model_type in TRAINABLE_TYPES:
        objective = build_objective(model_type, model)  # type: ignore[arg-type]
        assert type(objective) is OBJECTIVES[model_spec(model_type).objective or ""]


def test_an_unknown_or_untrainable_type_is_an_error_naming_the_known_ones() -> None:
    """No fall-through: a typo, the bare encoder as a training objective, a config type."""
    with pytest.raises(
        UnknownModelTypeError, match=r"'spidrr'.*\['hubert', .*did you mean 'spidr'"
    ):
        model_spec("spidrr")
    with pytest.raises(ConfigError, match=r"'hubert'; expected one of \['hubert_pretrain'"):
        build_objective("hubert", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"model.type: unknown model type 'wav2vec2'"):
        train_config.model_config_class("wav2vec2")


def test_a_checkpoint_of_an_unknown_type_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A native directory whose config.json names a type the registry lacks fails on the type."""
    save_directory(tmp_path / "odd", "wavlm", {}, {})
    with pytest.raises(CheckpointError, match=r"unknown model type 'wavlm'; expected one of"):
        load_model(tmp_path / "odd")


def test_the_catalogue_names_loaders_from_the_registry() -> None:
    """`KnownCheckpoint.loader` is the registered class's name."""
    entry = KnownCheckpoint("x", "org/x", "hf", "dinosr", None)
    assert entry.loader == "DinoSR.from_pretrained"
