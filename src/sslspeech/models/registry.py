"""The model registry: every model type, its class, config class and training objective.

Adding a model means writing its module (a `Pretrained` subclass with `model_type` and
`config_class`) and one `ModelSpec` line below; the training config, the trainer, validation,
the checkpoint readers and the converters all look types up here.

Layering: `models/` sits above `interop/`'s readers (which turn files into plain data, a
`LoadedCheckpoint`, and import nothing from `models/`) and below `training/`. So a spec names
its objective by a key that `sslspeech.training.objectives.OBJECTIVES` maps to a class; models
import nothing from training. Model classes are imported on first use: reading a training
config does not import torch.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sslspeech.errors import UnknownModelTypeError
from sslspeech.interop import load_checkpoint

if TYPE_CHECKING:
    from sslspeech.models.pretrained import Pretrained


@dataclass(frozen=True)
class ModelSpec:
    """One model type: where its class lives and how it is pretrained."""

    model_type: str
    """The `model_type` of config.json, checkpoints and `[model] type`."""
    class_path: str
    """"module:Class" of the model (a `Pretrained` subclass)."""
    objective: str | None = None
    """Key of its pretraining objective in `sslspeech.training.objectives.OBJECTIVES`; None:
    not pretrained here (the bare encoder)."""
    labels: bool = False
    """Whether pretraining reads frame labels (a manifest's `units` column)."""

    @property
    def class_name(self) -> str:
        """The model class's name (without importing it)."""
        return self.class_path.split(":")[1]

    @property
    def model_class(self) -> type[Pretrained]:
        """The model class (its module imported on first use)."""
        module_name, class_name = self.class_path.split(":")
        cls: type[Pretrained] = getattr(importlib.import_module(module_name), class_name)
        return cls

    @property
    def config_class(self) -> Any:
        """The model's config dataclass."""
        return self.model_class.config_class


MODELS: dict[str, ModelSpec] = {
    spec.model_type: spec
    for spec in (
        ModelSpec("hubert", "sslspeech.models.hubert:HuBERT"),
        ModelSpec(
            "hubert_pretrain",
            "sslspeech.models.hubert:HuBERTPretrain",
            objective="masked_prediction",
            labels=True,
        ),
        ModelSpec("spidr", "sslspeech.models.spidr:SpidR", objective="self_distillation"),
        ModelSpec("dinosr", "sslspeech.models.dinosr:DinoSR", objective="self_distillation"),
    )
}

TRAINABLE_TYPES: tuple[str, ...] = tuple(t for t, spec in MODELS.items() if spec.objective)
"""The types `[model] type` accepts."""


def model_spec(model_type: str, *, trainable: bool = False) -> ModelSpec:
    """The spec of `model_type` (one with an objective when `trainable`); an unknown type is
    an `UnknownModelTypeError` naming the known ones."""
    known = TRAINABLE_TYPES if trainable else tuple(MODELS)
    if model_type not in known:
        close = difflib.get_close_matches(str(model_type), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownModelTypeError(
            f"unknown model type {model_type!r}; expected one of {list(known)}{hint}"
        )
    return MODELS[model_type]


def model_class(model_type: str) -> type[Pretrained]:
    """The class of `model_type`."""
    return model_spec(model_type).model_class


def load_model(src: str | os.PathLike[str], **overrides: Any) -> Pretrained:
    """The model a checkpoint holds (file, directory, HF id or URL; format detected), of the
    type it records, in eval mode; `overrides` are config fields."""
    loaded = load_checkpoint(src, **overrides)
    return model_class(loaded.model_type).from_checkpoint(loaded)
