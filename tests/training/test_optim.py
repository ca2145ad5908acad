"""Schedules against torch's own scheduler compositions (the spidr package builds its schedules
from them, fairseq's polynomial decay is torch's PolynomialLR after a linear warmup); param
groups; autocast/scaler choices."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    PolynomialLR,
    SequentialLR,
)

from sslspeech.training.config import OptimConfig, ScheduleConfig
from sslspeech.training.optim import build_scaler, build_scheduler, param_groups

LR = 5e-4


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)


def _lrs(scheduler: LRScheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _reference(
    name: str, opt: torch.optim.Optimizer, s: ScheduleConfig, max_steps: int
) -> LRScheduler:
    warmup = LinearLR(opt, start_factor=s.init_lr_scale, total_iters=s.warmup_steps)
    if name == "tristage":  # spidr.optimizer.build_scheduler
        hold = LinearLR(opt, start_factor=1.0, total_iters=s.hold_steps)
        decay = LambdaLR(opt, lambda k: math.exp(math.log(s.final_lr_scale) * k / s.decay_steps))
        return SequentialLR(
            opt, [warmup, hold, decay], [s.warmup_steps, s.warmup_steps + s.hold_steps]
        )
    if name == "cosine":
        decay = CosineAnnealingLR(opt, max_steps - s.warmup_steps, s.final_lr_scale * LR)
        return SequentialLR(opt, [warmup, decay], [s.warmup_steps])
    decay = PolynomialLR(opt, total_iters=max_steps - s.warmup_steps, power=s.power)
    return SequentialLR(opt, [warmup, decay], [s.warmup_steps])


@pytest.mark.parametrize(
    ("name", "init", "final", "power"),
    [("tristage", 0.01, 0.01, 1.0), ("cosine", 0.01, 0.05, 1.0), ("polynomial", 1e-8, 0.0, 1.0)],
)
def test_schedules_match_torch_compositions(
    name: str, init: float, final: float, power: float
) -> None:
    schedule = ScheduleConfig(
        name=name,  # type: ignore[arg-type]
        warmup_steps=12,
        hold_steps=20 if name == "tristage" else 0,
        decay_steps=30 if name == "tristage" else 0,
        init_lr_scale=init,
        final_lr_scale=final,
        power=power,
    )
    ours = _lrs(build_scheduler(_optimizer(), schedule, 62), 62)
    opt = _optimizer()
    reference = _lrs(_reference(name, opt, schedule, 62), 62)
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-12)


def test_fairseq_polynomial_warmup_starts_at_zero_and_ends_at_end_lr() -> None:
    schedule = ScheduleConfig(name="polynomial", warmup_steps=4, final_lr_scale=0.0)
    lrs = _lrs(build_scheduler(_optimizer(), schedule, 10), 11)
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(LR) and lrs[10] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_param_groups_skip_frozen_parameters_and_optionally_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].requires_grad_(False)
    groups = param_groups(model, OptimConfig())
    assert [g["name"] for g in groups] == ["decay"] and len(groups[0]["params"]) == 4
    groups = param_groups(model, OptimConfig(decay_norms_and_biases=False))
    assert {g["name"]: len(g["params"]) for g in groups} == {"decay": 1, "no_decay": 3}
    assert groups[1]["weight_decay"] == 0.0


def test_only_float16_uses_a_gradient_scaler() -> None:
    cpu = torch.device("cpu")
    assert build_scaler("float16", cpu).is_enabled()
    assert not build_scaler("bfloat16", cpu).is_enabled()
