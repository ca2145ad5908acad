"""`from_pretrained` / `save_pretrained` shared by every model (native format: config.json +
model.safetensors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Self

from torch import nn

from sslspeech.errors import CheckpointError
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.safetensors import save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


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
        from sslspeech.interop import load_checkpoint

        return cls.from_checkpoint(load_checkpoint(src, **overrides))

    @classmethod
    def from_checkpoint(cls, loaded: Any) -> Self:
        """Build from a `sslspeech.interop.LoadedCheckpoint` (strict state-dict load)."""
        if loaded.model_type != cls.model_type:
            loaded = cls.adapt_checkpoint(loaded)
        model = cls(cls.config_class.from_dict(loaded.config))
        load_state_dict_strict(model, loaded.state_dict, loaded.format)
        return model.eval()

    @classmethod
    def adapt_checkpoint(cls, loaded: Any) -> Any:
        """Turn another model type's checkpoint into this one's (default: refuse)."""
        raise CheckpointError(
            f"the checkpoint holds a {loaded.model_type!r} model, not {cls.model_type!r}; load "
            f"it with sslspeech.interop.load_model or {loaded.model_type}'s class"
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config.json and model.safetensors into `directory` (created); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach() for name, tensor in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt"})
        config = {"model_type": self.model_type, **self.config.to_dict()}
        with atomic_open(directory / CONFIG_NAME, "w") as handle:
            json.dump(config, handle, indent=2)
            handle.write("\n")
        return directory


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
