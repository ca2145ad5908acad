"""Model FLOPs utilization: FLOPs per audio-second of a training step, and the peak of the GPU.

The FLOPs are counted once per run by torch's FLOP counter (matmuls, convolutions, attention)
on one utterance through a copy of the model (forward + backward of the objective), so the
count is the model's and the recipe's, not an estimate from a formula. MFU is then

    mfu = flops_per_audio_second * audio_seconds_per_second_per_gpu / peak_flops_per_gpu
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) peak TFLOP/s per GPU from the vendors' data sheets: tensor-core bf16/fp16,
# and float32 (TF32 tensor cores where the chip has them, as PyTorch uses for matmuls only
# when allowed; the plain FP32 peak otherwise). Matched against torch.cuda.get_device_name.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "B200": (2250.0, 1100.0),
    "H200": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "GH200": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "A800": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L40": (181.0, 90.5),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
    "A6000": (155.0, 77.0),
    "V100": (125.0, 15.7),
}


def peak_tflops(device: torch.device, dtype: str, override: float | None = None) -> float | None:
    """Peak TFLOP/s of one `device` at autocast `dtype` ("float32", "bfloat16", "float16"):
    `override` when given, else from `PEAK_TFLOPS` for a known CUDA GPU, else None (CPU or an
    unknown GPU: MFU is then not logged)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            half, single = PEAK_TFLOPS[key]
            return single if dtype == "float32" else half
    return None


def count_step_flops(model: nn.Module, step: Callable[[nn.Module], torch.Tensor]) -> int:
    """FLOPs of `step(copy of model)` (a forward returning a loss) and its backward.

    A copy, and the random generators forked, so the run's model, buffers (codebooks) and
    random streams are left exactly as they were: a resumed run stays bit-exact.
    """
    clone = copy.deepcopy(model)
    devices = [model_device(model)] if model_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
        step(clone).backward()
    return int(counter.get_total_flops())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def utilization(
    flops_per_audio_second: float, audio_seconds_per_second_per_gpu: float, peak: float | None
) -> dict[str, Any]:
    """`tflops_per_gpu` and, when the peak is known, `mfu` in [0, 1]."""
    tflops = flops_per_audio_second * audio_seconds_per_second_per_gpu / 1e12
    values: dict[str, Any] = {"tflops_per_gpu": tflops}
    if peak:
        values["mfu"] = tflops / peak
    return values
