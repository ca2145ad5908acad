"""sslspeech.training: configs, the training loop, checkpoints, validation.

`train(config)` runs or resumes a run; `load_config(path, overrides)` reads a TOML config;
`validate(manifest, checkpoint_dir, out)` scores saved checkpoints.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "TrainConfig": "sslspeech.training.config",
    "load_config": "sslspeech.training.config",
    "train": "sslspeech.training.trainer",
    "validate": "sslspeech.training.validation",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslspeech.training' has no attribute {name!r}")
