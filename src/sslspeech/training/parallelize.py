"""How the loop runs the model: compiled and/or wrapped in DDP from the outside, under
autocast, without gradient all-reduce on the first micro-batches of an accumulated step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sslspeech.training.compile import compile_for_training
from sslspeech.training.distributed import DistributedEnvironment

AUTOCAST_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""`optim.dtype` -> the torch dtype of autocast."""


def parallelize(
    model: nn.Module,
    env: DistributedEnvironment,
    *,
    compile: bool = False,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """The module the loop calls: `model` compiled and/or wrapped in DDP (the bare `model`
    keeps the state dict, the teacher and the codebooks).

    DDP copies rank 0's parameters and buffers to every rank once, at wrapping; it does not
    broadcast buffers before each forward: the models keep theirs identical on every rank (the
    online codebooks all-reduce their statistics themselves when torch.distributed is
    initialized). Gradients are views of DDP's communication buckets (no copy between them
    and `.grad` after each all-reduce; the loop scales and clips them in place).
    """
    if compile:
        compile_for_training(model)
    if not env.is_distributed:
        return model
    return DistributedDataParallel(
        model,
        device_ids=[env.device.index] if env.device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
    )


@contextlib.contextmanager
def no_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """DDP's `no_sync` for the first micro-batches of an accumulated step (else nothing)."""
    if skip and isinstance(module, DistributedDataParallel):
        with module.no_sync():
            yield
    else:
        yield


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of forward passes (nothing for float32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[dtype])
