"""Faster CPU float32 inference of the encoder, applied from outside the model.

`optimize_for_cpu_inference(model)` swaps encoder blocks (and every nn.Linear) for subclasses
with the same parameters and state dict. Each takes its fast path only in CPU float32 inference
(autograd, autocast and compilation off) and runs the plain block otherwise, so no training
graph reaches it. The fast paths: oneDNN's GEMM with GELU fused (a private op, probed once),
the conv stack over cache-sized time tiles, the positional conv on a channels-last layout.
"""

from __future__ import annotations

import functools
import logging
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslspeech.models.encoder import (
    ConvFeatureExtractor,
    ConvLayerBlock,
    ConvolutionalPositionalEmbedding,
    FeedForward,
)

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=nn.Module)


def optimize_for_cpu_inference(model: ModelT) -> ModelT:
    """Swap the plain blocks of `model` (in place) for their fast inference variants; the GEMM
    ones only when oneDNN's GEMM passes its probe. Returns `model`."""
    swaps: dict[type[nn.Module], type[nn.Module]] = {
        ConvFeatureExtractor: TiledConvFeatureExtractor,
        ConvolutionalPositionalEmbedding: ChannelsLastPositionalEmbedding,
    }
    if onednn_gemm_works():
        swaps |= {nn.Linear: OneDNNLinear, FeedForward: FusedFeedForward}
    for module in model.modules():
        fast = swaps.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return model


def fast_path_applies(x: Tensor) -> bool:
    """Whether `x` is CPU float32 inference: no autograd, no autocast, not being compiled."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """F.linear (then GELU) on oneDNN's GEMM: [..., in_features] -> [..., out_features]."""
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, attr, [], algorithm)


@functools.cache
def onednn_gemm_works() -> bool:
    """Whether oneDNN's private GEMM op exists and equals F.linear (+ GELU) on a tiny input;
    checked once per process, with the reason logged when it does not."""
    if not (
        torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    ):
        log.info(
            "oneDNN GEMM unavailable in torch %s: CPU inference uses F.linear", torch.__version__
        )
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 3, generator=generator).transpose(1, 2)  # strided, as in attention
    weight, bias = torch.randn(5, 8, generator=generator), torch.randn(5, generator=generator)
    try:
        with torch.no_grad():
            plain = F.linear(x, weight, bias)
            same = all(
                torch.allclose(onednn_linear(x, weight, bias, gelu), expected, atol=1e-5)
                for gelu, expected in ((False, plain), (True, F.gelu(plain)))
            )
    except Exception as error:  # a private op may change in any release: any failure rules it out
        log.warning(
            "oneDNN GEMM probe raised %s: %s; CPU inference uses F.linear",
            type(error).__name__,
            error,
        )
        return False
    if not same:
        log.warning("oneDNN GEMM probe differs from F.linear; CPU inference uses F.linear")
    return same


class OneDNNLinear(nn.Linear):
    """nn.Linear on oneDNN's GEMM in CPU float32 inference (1.2-1.6x MKL's on AMD CPUs)."""

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_features] -> [..., out_features]."""
        if fast_path_applies(x):
            return onednn_linear(x, self.weight, self.bias)
        return super().forward(x)


class FusedFeedForward(FeedForward):
    """FeedForward with its GELU fused into oneDNN's GEMM in CPU float32 inference."""

    def forward(self, x: Tensor) -> Tensor:
        """[batch, frame, feature] -> [batch, frame, feature]."""
        if not fast_path_applies(x):
            return super().forward(x)
        dense = self.intermediate_dense
        hidden = onednn_linear(x, dense.weight, dense.bias, gelu=True)
        return self.output_dense(self.intermediate_dropout(hidden))


class TiledConvFeatureExtractor(ConvFeatureExtractor):
    """The conv stack run over time tiles of about `tile_samples` samples per batch, so that
    each block's input stays in cache (1.2x faster on AMD CPUs); frame-exact."""

    tile_samples: int = 20480
    """Waveform samples per tile, times the batch size."""

    def convolve(self, waveforms: Tensor) -> Tensor:
        """[batch, sample] -> [batch, channel, frame]."""
        if not fast_path_applies(waveforms):
            return super().convolve(waveforms)
        blocks = [block for block in self.conv_layers if isinstance(block, ConvLayerBlock)]
        x = waveforms.unsqueeze(1)
        if isinstance(blocks[0].layer_norm, nn.GroupNorm):
            # Its statistics need whole rows, in the plain block's float32 rounding: when a
            # channel's mean dwarfs its spread (DC offsets, constant input) any other sum differs.
            x = blocks.pop(0)(x)
        if not blocks:
            return x
        hop, field = stack_geometry(blocks)
        num_frames = (x.shape[2] - field) // hop + 1
        tile = max(1, self.tile_samples // (self.config.samples_per_frame * x.shape[0]))
        tiles = []
        for start in range(0, num_frames, tile):
            stop = min(num_frames, start + tile)
            y = x[:, :, start * hop : (stop - 1) * hop + field]
            for block in blocks:
                y = block(y)
            tiles.append(y)
        return torch.cat(tiles, dim=2)


def stack_geometry(blocks: list[ConvLayerBlock]) -> tuple[int, int]:
    """(hop, receptive field) in input samples of conv blocks applied in turn."""
    hop, field = 1, 1
    for block in blocks:
        field += (block.kernel - 1) * hop
        hop *= block.stride
    return hop, field


class ChannelsLastPositionalEmbedding(ConvolutionalPositionalEmbedding):
    """The positional conv read in place as a channels-last 2-D image in CPU float32
    inference: oneDNN's grouped conv runs ~1.4x faster on that layout."""

    def convolve(self, x: Tensor) -> Tensor:
        """[batch, feature, frame] -> [batch, feature, frame + 1 if K is even]."""
        if not fast_path_applies(x):
            return super().convolve(x)
        conv = self.conv
        return F.conv2d(
            x.unsqueeze(2),
            conv.weight.unsqueeze(2),
            conv.bias,
            padding=(0, self.kernel // 2),
            groups=conv.groups,
        ).squeeze(2)
