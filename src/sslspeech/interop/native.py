"""Our own formats: a `save_pretrained` directory (config.json with `model_type` +
model.safetensors) and a training checkpoint `step_N.pt`, whose model part (`model_type`,
`model_config`, `model`) is written and read here (`sslspeech.training.checkpoint` holds the rest
of its schema)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslspeech.errors import CheckpointError
from sslspeech.interop import CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import tensors_only
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.safetensors import load_file, save_file

if TYPE_CHECKING:
    from torch import Tensor

CONFIG_NAME = "config.json"
"""A native directory's config: `{"model_type": ..., **config fields}`."""
WEIGHTS_NAME = "model.safetensors"
"""A native directory's weights (native parameter names)."""
MODEL_PART_KEYS = ("model_type", "model_config", "model")
"""The keys of a training checkpoint that hold the model."""


def save_directory(
    directory: str | os.PathLike[str],
    model_type: str,
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
) -> Path:
    """Write a native directory (created): config.json and model.safetensors; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach() for name, tensor in state.items()}
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    with atomic_open(directory / CONFIG_NAME, "w") as handle:
        json.dump({"model_type": model_type, **config}, handle, indent=2)
        handle.write("\n")
    return directory


def model_part(
    model_type: str, config: Mapping[str, Any], state: Mapping[str, Tensor]
) -> dict[str, Any]:
    """The model part of a training checkpoint (`model_config` repeats `model_type`, as
    config.json does)."""
    return {
        "model_type": model_type,
        "model_config": {"model_type": model_type, **config},
        "model": dict(state),
    }


def read_model_part(payload: Mapping[str, Any], origin: str, reader: str) -> LoadedCheckpoint:
    """The model of a training checkpoint's payload (as written by `model_part`)."""
    missing = [key for key in MODEL_PART_KEYS if key not in payload]
    model_type, config = payload.get("model_type"), payload.get("model_config")
    if missing or not isinstance(model_type, str) or not isinstance(config, dict):
        raise CheckpointError(
            f"{origin}: a training checkpoint needs a string `model_type`, a dict `model_config` "
            f"and a `model` state dict; missing {missing}, model_type {model_type!r}, "
            f"model_config a {type(config).__name__}"
        )
    config = {key: value for key, value in config.items() if key != "model_type"}
    return LoadedCheckpoint(model_type, config, tensors_only(payload["model"], origin), reader)


class NativeDirectoryReader:
    """A directory written by `save_pretrained`."""

    name = "native"

    def matches(self, source: CheckpointSource) -> bool:
        """config.json names a model type and has no HF fields, next to model.safetensors."""
        if not source.is_dir:
            return False
        config = source.json(CONFIG_NAME)
        return (
            config is not None
            and isinstance(config.get("model_type"), str)
            and "conv_dim" not in config
            and (source.path / WEIGHTS_NAME).is_file()
        )

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config as saved, weights from model.safetensors."""
        config = dict(source.json(CONFIG_NAME) or {})
        model_type = config.pop("model_type")
        state = load_file(source.path / WEIGHTS_NAME)
        return LoadedCheckpoint(model_type, config, state, self.name)


class TrainingCheckpointReader:
    """A training checkpoint (`step_N.pt`) written by sslspeech.training."""

    name = "training"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle holding the model-part keys."""
        if not source.is_pickle:
            return False
        payload = source.payload
        return isinstance(payload, dict) and all(key in payload for key in MODEL_PART_KEYS)

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """The model part of the checkpoint."""
        return read_model_part(source.payload, str(source.path), self.name)


READERS = [NativeDirectoryReader(), TrainingCheckpointReader()]
