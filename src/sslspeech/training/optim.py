"""Optimizer, learning-rate schedules, loss scaling and gradient clipping (wrapping the model
for training is `sslspeech.training.parallelize`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from sslspeech.training.config import OptimConfig, ScheduleConfig

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, config: OptimConfig) -> list[dict[str, Any]]:
    """Trainable parameters (the EMA teacher is not), in one group, or two when norms and
    biases (1-D tensors) skip weight decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if config.decay_norms_and_biases or param.ndim >= 2 else no_decay).append(param)
    groups = [{"name": "decay", "params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module, config: OptimConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over `param_groups` (fused kernels on CUDA)."""
    groups = param_groups(model, config)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda" or None,
    )


def lr_scale(step: int, schedule: ScheduleConfig, max_steps: int) -> float:
    """Multiplier of the peak learning rate used by the update that follows `step` updates."""
    warmup = schedule.warmup_steps
    if step < warmup:
        return schedule.init_lr_scale + (1.0 - schedule.init_lr_scale) * step / warmup
    final = schedule.final_lr_scale
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "tristage":
        after_hold = step - warmup - schedule.hold_steps
        if after_hold < 0:
            return 1.0
        if after_hold >= schedule.decay_steps:
            return final
        return math.exp(math.log(final) * after_hold / schedule.decay_steps)
    span = max(max_steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    if schedule.name == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return final + (1.0 - final) * (1.0 - progress) ** schedule.power  # fairseq polynomial_decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_scale` (its state is the step count)."""

    def scale(step: int) -> float:
        return lr_scale(step, schedule, max_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, scale)


def build_scaler(dtype: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 (a disabled scaler, a no-op, otherwise). The loop back-propagates
    summed losses, as fairseq, so the scale starts at fairseq's `fp16_init_scale` (128)."""
    return torch.amp.GradScaler(device.type, init_scale=2.0**7, enabled=dtype == "float16")


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (0 = measure only); returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
