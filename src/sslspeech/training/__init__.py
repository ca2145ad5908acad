"""sslspeech.training: configs, the training loop, checkpoints, validation.

`train(config)` runs or resumes a run; `load_config(path, overrides)` reads a TOML config;
`validate(manifest, checkpoint_dir, out)` scores saved checkpoints.
"""

from sslspeech.utils.lazy import lazy_getattr

_LAZY = {
    "TrainConfig": "sslspeech.training.config",
    "load_config": "sslspeech.training.config",
    "train": "sslspeech.training.trainer",
    "validate": "sslspeech.training.validation",
}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
