"""Training objectives: what one micro-batch costs, and what happens after each optimizer step.

Every objective returns the *sum* of its per-frame losses and the number of frames it covers;
the loop scales gradients by world_size / (frames over all ranks and micro-batches), fairseq's
normalization, so one step on N ranks equals one step on one rank with N accumulated batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from sslspeech.errors import ConfigError
from sslspeech.models.masked import MaskedFrames
from sslspeech.models.registry import model_spec


@dataclass
class Loss:
    """One micro-batch: summed loss (on the device), frames counted, detached statistics."""

    total: Tensor
    count: int
    stats: dict[str, Tensor]


class Objective(Protocol):
    """What the loop needs from a pretraining objective."""

    freeze_step: int | None
    """Step from which part of the model stops training (None: never); the loop re-wraps the
    model for DDP then."""

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        """Forward one micro-batch through `module` (the wrapped model)."""
        ...

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        """Called after optimizer step `step` (1-based) on the bare model; returns logs."""
        ...

    def resume(self, model: nn.Module, step: int) -> None:
        """Put the model in the state of a run `step` steps in (e.g. frozen parts)."""
        ...


def masked_frames(batch: dict[str, Any]) -> MaskedFrames:
    """The collator's mask with its frames listed (what the models would need the host for)."""
    return MaskedFrames(
        batch["mask"], batch["masked_frames"], batch["unmasked_frames"], batch["padded"]
    )


class MaskedPrediction:
    """HuBERT: cross entropy of the masked frames' cluster ids (+ unmasked frames when
    `pred_nomask_weight` > 0, + the feature penalty), as fairseq's HubertCriterion: the model's
    summed loss and its frame count, passed on."""

    freeze_step: int | None = None

    def __init__(self, model: nn.Module) -> None:
        """Objectives are built from their model; this one needs nothing from it."""
        del model

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        # The collator pads labels with -100; padded frames are outside `lengths`, so any
        # valid id does there.
        labels = batch["labels"].clamp(min=0)
        total, count, stats = module(
            batch["waveforms"], labels, mask=masked_frames(batch), lengths=batch["lengths"]
        )
        return Loss(total=total, count=count, stats=stats)

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}

    def resume(self, model: nn.Module, step: int) -> None:
        pass


class SelfDistillation:
    """DinoSR / SpidR: predict the EMA teacher's codebook assignments of the masked frames.
    After each step (`update_teacher`) the codebooks apply the statistics of the step's
    micro-batches and the teacher follows the student; from `freeze_step` on the teacher stops
    (decay 1) and the model freezes its conv extractor and projection (AdamW skips them: they
    get no gradient)."""

    def __init__(self, model: nn.Module) -> None:
        self.freeze_step = getattr(model.config, "freeze_step", None)

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        losses, stats = module(
            batch["waveforms"], mask=masked_frames(batch), lengths=batch["lengths"]
        )
        return Loss(total=losses.sum(), count=losses.numel(), stats=dict(stats))

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        decay = model.update_teacher(step)  # type: ignore[operator]
        return {"ema_decay": float(decay)}

    def resume(self, model: nn.Module, step: int) -> None:
        if self.freeze_step is not None and step >= self.freeze_step:
            model.freeze_extractor()  # type: ignore[operator]


OBJECTIVES: dict[str, Callable[[nn.Module], Objective]] = {
    "masked_prediction": MaskedPrediction,
    "self_distillation": SelfDistillation,
}
"""Objective key (a `ModelSpec.objective` of `sslspeech.models.registry`) -> its class."""


def build_objective(model_type: str, model: nn.Module) -> Objective:
    """The objective the model registry names for `model_type` (an error for a type without)."""
    key = model_spec(model_type, trainable=True).objective
    objective = OBJECTIVES.get(key or "")
    if objective is None:
        raise ConfigError(
            f"model type {model_type!r} names the objective {key!r}, which "
            f"sslspeech.training.objectives.OBJECTIVES lacks (it has {sorted(OBJECTIVES)})"
        )
    return objective(model)
