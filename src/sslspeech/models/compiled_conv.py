"""conv1d as a custom op for compiled training: inductor calls it as is instead of lowering it.

Inductor's conv-backward lowering (torch 2.13) turns every stride of its gradients into an int
guard, so a compiled model recompiles for every new batch length; the shapes of this op follow
from one formula, so one dynamic graph serves them all. The kernels are aten's, as in eager.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def apply_conv(conv: nn.Module, x: Tensor) -> Tensor:
    """`conv(x)` for an nn.Conv1d; through the custom op while being compiled."""
    if not torch.compiler.is_compiling():
        return conv(x)
    assert isinstance(conv, nn.Conv1d) and isinstance(conv.padding, tuple)  # not "same"
    padding = conv.padding
    return _conv1d(x, conv.weight, conv.bias, conv.stride[0], padding[0], conv.groups)


@torch.library.custom_op("sslspeech::conv1d", mutates_args=())
def _conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, groups: int
) -> Tensor:
    return F.conv1d(x, weight, bias, stride, padding, 1, groups)


@_conv1d.register_fake
def _conv1d_shape(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, groups: int
) -> Tensor:
    frames = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    return x.new_empty(x.shape[0], weight.shape[0], frames)


@torch.library.custom_op("sslspeech::conv1d_backward", mutates_args=())
def _conv1d_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: int,
    padding: int,
    groups: int,
    needs: list[bool],
) -> list[Tensor]:
    """Gradients of x, weight and bias (empty where `needs` is False)."""
    bias_sizes = [weight.shape[0]] if needs[2] else None
    grads = torch.ops.aten.convolution_backward(
        grad, x, weight, bias_sizes, [stride], [padding], [1], False, [0], groups, needs
    )
    return [g if g is not None else grad.new_empty(0) for g in grads]


@_conv1d_backward.register_fake
def _conv1d_backward_shapes(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: int,
    padding: int,
    groups: int,
    needs: list[bool],
) -> list[Tensor]:
    shapes = [x.shape, weight.shape, weight.shape[:1]]
    return [
        grad.new_empty(shape if need else (0,)) for shape, need in zip(shapes, needs, strict=True)
    ]


def _save(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    x, weight, bias, stride, padding, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.options = (stride, padding, groups)  # type: ignore[attr-defined]
    ctx.has_bias = bias is not None  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:
    x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
    needs = [*ctx.needs_input_grad[:2], ctx.has_bias and ctx.needs_input_grad[2]]  # type: ignore[attr-defined]
    gx, gw, gb = _conv1d_backward(grad.contiguous(), x, weight, *ctx.options, needs)  # type: ignore[attr-defined]
    return (
        gx if needs[0] else None,
        gw if needs[1] else None,
        gb if needs[2] else None,
        None,
        None,
        None,
    )


_conv1d.register_autograd(_backward, setup_context=_save)
