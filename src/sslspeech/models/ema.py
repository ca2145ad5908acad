"""EMA teacher: decay schedules of DinoSR and SpidR, and the in-place teacher update."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def dinosr_ema_decay(
    step: int, start_decay: float, final_decay: float, final_step: int, freeze_step: int
) -> float:
    """Linear from `start_decay` at step 0 to `final_decay` at `final_step`, then 1 (frozen teacher)
    from `freeze_step` on (fairseq data2vec/DinoSR `ema_decay`, `ema_end_decay`,
    `ema_anneal_end_step`, `freeze_teacher_step`)."""
    if step < final_step:
        return final_decay - (final_decay - start_decay) * (1 - step / final_step)
    if step < freeze_step:
        return final_decay
    return 1.0


def spidr_ema_decay(step: int, start_decay: float, timescale: float, threshold: float) -> float:
    """1 - (1 - start_decay) * exp(-step / timescale), and exactly 1 once 1 - decay <= threshold."""
    decay = 1 - (1 - start_decay) * math.exp(-step / timescale)
    return decay if 1 - decay > threshold else 1.0


@torch.no_grad()
def ema_update_(
    teacher: nn.Module, student: nn.Module, decay: float, exclude: Sequence[str] = ()
) -> None:
    """teacher = decay * teacher + (1 - decay) * student, in place, parameter by parameter.

    Parameters whose name starts with an entry of `exclude`, and every buffer, are copied from
    the student instead. Nothing happens unless 0 < decay < 1. Both modules must have the same
    structure (the teacher is a copy of the student).
    """
    if not 0.0 < decay < 1.0:
        return
    lerp_teacher: list[Tensor] = []
    lerp_student: list[Tensor] = []
    copy_teacher: list[Tensor] = []
    copy_student: list[Tensor] = []
    student_params = dict(student.named_parameters())
    for name, param in teacher.named_parameters():
        source = student_params[name]
        if any(name.startswith(prefix) for prefix in exclude):
            copy_teacher.append(param)
            copy_student.append(source)
        else:
            lerp_teacher.append(param)
            lerp_student.append(source.to(param.dtype))
    student_buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        copy_teacher.append(buffer)
        copy_student.append(student_buffers[name])
    # Multi-tensor kernels: one launch per group instead of one per tensor.
    if lerp_teacher:
        torch._foreach_lerp_(lerp_teacher, lerp_student, 1.0 - decay)
    if copy_teacher:
        torch._foreach_copy_(copy_teacher, copy_student)
