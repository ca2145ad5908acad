"""What the training forward of every model takes: the masked frames, listed.

Masks are drawn by the data side (the collator, `sslspeech.data.masking`); a model only applies
the mask it is given. A `MaskedFrames` is that mask with what would otherwise need the host
(`nonzero`, `.any()`) computed beforehand, on the CPU, so that the training forward of HuBERT,
DinoSR and SpidR never waits for the device. A plain (batch, frame) bool mask is accepted too
(`masked_frames` lists its frames: host syncs, fine outside the training loop).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from sslspeech.errors import DataError


class MaskedFrames(NamedTuple):
    """A span mask of a padded batch and its frames as flat (batch * frame) row-major indices."""

    mask: Tensor
    """[batch, frame] bool, True = masked (never a padding frame)."""
    masked: Tensor
    """[masked frames] int64 flat indices of the masked frames, in (batch, frame) order."""
    unmasked: Tensor
    """[unmasked valid frames] int64 flat indices of the valid frames not masked, same order."""
    padded: bool
    """Whether any row has padding frames (False: the `lengths` can be ignored)."""


def masked_frames(mask: Tensor, frame_lengths: Tensor | None) -> MaskedFrames:
    """List the frames of a [batch, frame] bool `mask` (host syncs: `nonzero`, `any`)."""
    num_frames = mask.shape[1]
    valid = torch.ones_like(mask)
    if frame_lengths is not None:
        valid = torch.arange(num_frames, device=mask.device) < frame_lengths.unsqueeze(1)
    mask = mask & valid
    return MaskedFrames(
        mask,
        mask.flatten().nonzero().squeeze(1),
        (valid & ~mask).flatten().nonzero().squeeze(1),
        bool((~valid).any()),
    )


def resolve_mask(
    mask: Tensor | MaskedFrames | None,
    frames: Tensor,
    frame_lengths: Tensor | None,
    training: bool,
) -> MaskedFrames:
    """The mask a model applies to its `frames` [batch, frame, feature], with its frames listed.

    A `MaskedFrames` is used as given (no host sync), unless the model uses fewer frames than
    the collator made (HuBERT when labels run short): then it is listed again from its mask. A
    bool mask is checked, trimmed and listed (host syncs). None: nothing is masked, which only
    eval mode accepts (training masks are drawn by the data side).
    """
    batch, num_frames = frames.shape[:2]
    if isinstance(mask, MaskedFrames):
        if mask.mask.shape[1] <= num_frames:
            _check_listed(mask, batch, num_frames)
            return mask
        mask = mask.mask
    if mask is None:
        if training:
            raise DataError(
                "train mode needs mask=(batch, frame) bool: masks are drawn by the data side "
                "(sslspeech.data.masking.compute_mask, the collator)"
            )
        mask = torch.zeros(batch, num_frames, dtype=torch.bool, device=frames.device)
    return masked_frames(_bool_mask(mask, batch, num_frames, frames.device), frame_lengths)


def _check_listed(frames: MaskedFrames, batch: int, num_frames: int) -> None:
    """The listed mask fits a (batch, num_frames) batch (shapes only: no host sync)."""
    mask = frames.mask
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch, num_frames):
        raise DataError(
            f"MaskedFrames.mask must be (batch={batch}, frames={num_frames}) bool; got "
            f"{mask.dtype} {tuple(mask.shape)} (the collator's frame_lengths must be the model's)"
        )


def _bool_mask(mask: Any, batch: int, num_frames: int, device: torch.device) -> Tensor:
    """A caller's (batch, >= num_frames) bool mask, checked and trimmed to `num_frames`."""
    mask = torch.as_tensor(mask, device=device)
    if mask.dtype != torch.bool or mask.ndim != 2 or mask.shape[0] != batch:
        raise DataError(
            f"mask must be (batch={batch}, frames={num_frames}) bool, True = masked; got "
            f"{mask.dtype} {tuple(mask.shape)} (for frame indices use mask_from_indices)"
        )
    if mask.shape[1] < num_frames:
        raise DataError(f"mask has {mask.shape[1]} frames; the waveforms give {num_frames}")
    return mask[:, :num_frames]


class _SelectRows(torch.autograd.Function):
    """`x.index_select(0, index)` for unique indices, whose backward writes the gradient rows
    (index_put_) instead of accumulating them (index_add_, ~100x slower on CPU)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.num_rows, *grad.shape[1:]))
        return out.index_put_((index,), grad), None


def select_rows(x: Tensor, index: Tensor) -> Tensor:
    """Rows `index` (unique) of `x` [row, ...], with a fast backward."""
    if not x.requires_grad:
        return x.index_select(0, index)
    out: Tensor = _SelectRows.apply(x, index)
    return out
