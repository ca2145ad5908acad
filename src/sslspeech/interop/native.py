"""Our own formats: a `save_pretrained` directory (config.json with `model_type` +
model.safetensors) and a training checkpoint `step_N.pt` (`model_type`, `model_config`,
`model`)."""

from __future__ import annotations

from typing import Any

from sslspeech.errors import CheckpointError
from sslspeech.interop import MODEL_CLASSES, CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import tensors_only
from sslspeech.utils.safetensors import load_file

_TRAINING_KEYS = ("model_type", "model_config", "model")


class NativeDirectoryReader:
    """A directory written by `save_pretrained`."""

    name = "native"

    def matches(self, source: CheckpointSource) -> bool:
        """config.json names one of our model types and has no HF fields."""
        if not source.is_dir:
            return False
        config = source.json("config.json")
        return (
            config is not None
            and config.get("model_type") in MODEL_CLASSES
            and "conv_dim" not in config
            and (source.path / "model.safetensors").is_file()
        )

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config as saved, weights from model.safetensors."""
        config = dict(source.json("config.json") or {})
        model_type = config.pop("model_type")
        state = load_file(source.path / "model.safetensors")
        return LoadedCheckpoint(model_type, config, state, self.name)


class TrainingCheckpointReader:
    """A training checkpoint (`step_N.pt`) written by sslspeech.training."""

    name = "training"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle holding the `model_type`, `model_config` and `model` keys."""
        if not source.is_pickle:
            return False
        payload = source.payload
        return isinstance(payload, dict) and all(key in payload for key in _TRAINING_KEYS)

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """The model part of the checkpoint."""
        payload = source.payload
        origin = str(source.path)
        model_type = payload["model_type"]
        config = payload["model_config"]
        if model_type not in MODEL_CLASSES or not isinstance(config, dict):
            raise CheckpointError(
                f"{origin}: training checkpoint with model_type {model_type!r} and a "
                f"{type(config).__name__} model_config; expected one of {sorted(MODEL_CLASSES)}"
                " and a dict"
            )
        config = {key: value for key, value in config.items() if key != "model_type"}
        state = tensors_only(payload["model"], origin)
        return LoadedCheckpoint(model_type, config, state, self.name)


READERS = [NativeDirectoryReader(), TrainingCheckpointReader()]
