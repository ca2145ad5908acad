"""Training objectives: what one micro-batch costs, and what happens after each optimizer step.

Every objective returns the *sum* of its per-frame losses and the number of frames it covers;
the loop scales gradients by world_size / (frames over all ranks and micro-batches), fairseq's
normalization, so one step on N ranks equals one step on one rank with N accumulated batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn


@dataclass
class Loss:
    """One micro-batch: summed loss (on the device), frames counted, detached statistics."""

    total: Tensor
    count: int
    stats: dict[str, Tensor]


class Objective(Protocol):
    """What the loop needs from a pretraining objective."""

    freeze_step: int | None
    """Step from which `optim.freeze_modules` stop training (None: never)."""

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        """Forward one micro-batch through `module` (the wrapped model)."""
        ...

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        """Called after optimizer step `step` (1-based) on the bare model; returns logs."""
        ...


class MaskedPrediction:
    """HuBERT: cross entropy of the masked frames' cluster ids (+ feature penalty)."""

    freeze_step: int | None = None

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        # The collator pads labels with -100; padded frames are outside `lengths`, so any
        # valid id does there.
        labels = batch["labels"].clamp(min=0)
        loss, stats = module(
            batch["waveforms"], labels, mask=batch["mask"], lengths=batch["lengths"]
        )
        count = int(stats["n_masked"])
        if float(getattr(_bare(module).config, "pred_nomask_weight", 0.0)) > 0:
            count += int(stats["n_unmasked"])
        stats = {k: v for k, v in stats.items() if not k.startswith("n_")}
        return Loss(total=loss * count, count=count, stats=stats)

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}


class SelfDistillation:
    """DinoSR / SpidR: predict the EMA teacher's codebook assignments of the masked frames;
    the teacher follows the student after each step; from `freeze_step` on the teacher stops
    (decay 1) and the conv extractor freezes."""

    def __init__(self, model: nn.Module) -> None:
        self.freeze_step = getattr(model.config, "freeze_step", None)

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        losses, stats = module(batch["waveforms"], mask=batch["mask"], lengths=batch["lengths"])
        return Loss(total=losses.sum(), count=losses.numel(), stats=dict(stats))

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        decay = model.update_teacher(step)  # type: ignore[operator]
        return {"ema_decay": float(decay)}


def build_objective(model_type: str, model: nn.Module) -> Objective:
    """The objective that trains `model_type`."""
    if model_type == "hubert_pretrain":
        return MaskedPrediction()
    return SelfDistillation(model)


def _bare(module: nn.Module) -> nn.Module:
    inner = getattr(module, "module", module)  # DistributedDataParallel
    return getattr(inner, "_orig_mod", inner)  # torch.compile wrapper


def count_frames(losses: list[Loss]) -> int:
    """Frames of the micro-batches of one step on this rank."""
    return sum(loss.count for loss in losses)


def detach_total(losses: list[Loss]) -> Tensor:
    """Summed loss of one step on this rank (detached)."""
    return torch.stack([loss.total.detach().float() for loss in losses]).sum()
