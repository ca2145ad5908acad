"""`from_pretrained` / `save_pretrained` shared by every model: files are read and written by
`sslspeech.interop` (which imports nothing from `models/`); the model is built here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Self

from torch import nn

from sslspeech.errors import CheckpointConfigError, CheckpointError, ConfigError
from sslspeech.interop import LoadedCheckpoint, load_checkpoint
from sslspeech.interop.native import save_directory
from sslspeech.models.configs import check_weights_fit


class Pretrained(nn.Module):
    """Base of the models: a `config` dataclass, native save/load and loading foreign formats."""

    model_type: ClassVar[str]
    """The `model_type` written in config.json."""
    config_class: ClassVar[Any]
    """Config dataclass (with `from_dict` / `to_dict`)."""
    config: Any

    @classmethod
    def from_pretrained(cls, src: str | os.PathLike[str], **overrides: Any) -> Self:
        """Load from a file, directory, HF model id or URL (format detected from the content);
        `overrides` are config fields. Returned in eval mode."""
        return cls.from_checkpoint(load_checkpoint(src, **overrides))

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint) -> Self:
        """Build from what a reader returned (strict state-dict load)."""
        if cls.model_type in loaded.also_fits:
            loaded = cls.retype_checkpoint(loaded)
        elif loaded.model_type != cls.model_type:
            loaded = cls.adapt_checkpoint(loaded)
        model = cls(cls.checked_config(loaded))
        load_state_dict_strict(model, loaded.state_dict, loaded.format)
        return model.eval()

    @classmethod
    def checked_config(cls, loaded: LoadedCheckpoint) -> Any:
        """The config of `loaded`, validated (naming the file) and its size checked against
        the weights before anything is built: a hostile config.json must not allocate
        gigabytes."""
        origin = loaded.origin or loaded.format
        try:
            config = cls.config_class.from_dict(loaded.config)
        except ConfigError as error:
            field = next((f for f in loaded.config_keys if str(error).startswith(f)), None)
            named = f" ({loaded.config_keys[field]})" if field else ""
            raise CheckpointConfigError(
                f"{origin}: invalid {loaded.format} config{named}: {error}"
            ) from None
        check_weights_fit(config, loaded.state_dict, origin)
        return config

    @classmethod
    def retype_checkpoint(cls, loaded: LoadedCheckpoint) -> LoadedCheckpoint:
        """The checkpoint as this type, keeping the config fields this type has."""
        fields = {field.name for field in dataclasses.fields(cls.config_class)}
        config = {key: value for key, value in loaded.config.items() if key in fields}
        return dataclasses.replace(loaded, model_type=cls.model_type, config=config)

    @classmethod
    def adapt_checkpoint(cls, loaded: LoadedCheckpoint) -> LoadedCheckpoint:
        """Turn another model type's checkpoint into this one's (default: refuse)."""
        raise CheckpointError(
            f"the checkpoint holds a {loaded.model_type!r} model, not {cls.model_type!r}; load "
            f"it with sslspeech.models.load_model or {loaded.model_type}'s class"
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config.json and model.safetensors into `directory` (created); returns it."""
        return save_directory(directory, self.model_type, self.config.to_dict(), self.state_dict())


def load_state_dict_strict(model: nn.Module, state: dict[str, Any], origin: str) -> None:
    """`load_state_dict(strict=True)` with an error naming the missing/unexpected keys."""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{origin} checkpoint does not fit {type(model).__name__}: missing keys "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected keys "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    own = model.state_dict()
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"{origin} checkpoint: {name} has shape {tuple(tensor.shape)}, the model "
                f"expects {tuple(own[name].shape)} (config and weights disagree)"
            )
    model.load_state_dict(state, strict=True)
