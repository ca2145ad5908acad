"""Span masking for masked prediction (HuBERT, DinoSR, SpidR), vectorized in torch.

Semantics of fairseq's `compute_mask_indices` with static spans and overlap allowed, per row of
`sz` valid frames:

1. ``num = max(min_masks, int(mask_prob * sz / mask_length + u))`` with ``u ~ U[0, 1)``
   (probabilistic rounding; one draw shared by all rows when `lengths` is None, one per row
   otherwise);
2. the number of possible starts is ``R = sz - mask_length``, or ``num + 1`` when
   ``sz - mask_length <= num``; `num` distinct starts are drawn uniformly from ``[0, R)``;
3. each start masks ``mask_length`` frames, overlapping spans merge, frames ``>= sz`` (padding)
   are never masked;
4. with ``require_same_masks`` (fairseq's default) every row keeps a uniformly random subset of
   its masked frames so that all rows have as many as the sparsest row; ``mask_dropout`` then
   unmasks ``round(count * mask_dropout)`` random frames per row.

Same distribution as fairseq, not the same random stream: draws come from the torch `generator`.
"""

from __future__ import annotations

import torch

from sslspeech.errors import ConfigError


def _check(shape: tuple[int, int], mask_prob: float, mask_length: int, min_masks: int) -> None:
    if len(shape) != 2 or min(shape) < 0:
        raise ConfigError(f"mask shape must be (batch, time) with sizes >= 0, got {shape}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ConfigError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ConfigError(f"mask_length must be >= 1, got {mask_length}")
    if min_masks < 0:
        raise ConfigError(f"min_masks must be >= 0, got {min_masks}")


def _valid_lengths(
    lengths: torch.Tensor | None, batch: int, time: int, device: torch.device
) -> torch.Tensor:
    if lengths is None:
        return torch.full((batch,), time, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
    if lengths.numel() != batch:
        raise ConfigError(f"lengths has {lengths.numel()} entries, the batch has {batch} rows")
    return lengths.clamp(0, time)


def keep_random(
    mask: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep `keep[b]` uniformly chosen True entries of each row of `mask` (B, T); drop the rest."""
    batch, time = mask.shape
    keep = keep.to(mask.device).long()
    if time == 0 or batch == 0:
        return mask
    # float64 keys: float32 ties (1 in 2**24) at the k-th value would keep an extra frame
    keys = torch.rand(batch, time, generator=generator, device=mask.device, dtype=torch.float64)
    keys = keys.masked_fill(~mask, 2.0)  # unmasked frames rank last
    if bool((keep == keep[0]).all()):  # one count for all rows: a k-th value threshold
        count = int(keep[0])
        if count <= 0:
            return torch.zeros_like(mask)
        threshold = keys.kthvalue(min(count, time), dim=1, keepdim=True).values
        return mask & (keys <= threshold)
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(time, device=mask.device).expand(batch, time)
    )
    return mask & (ranks < keep[:, None])


def compute_mask(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    require_same_masks: bool = True,
    mask_dropout: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean span mask `(batch, time)`, True = masked; `lengths` = valid frames per row.

    fairseq `compute_mask_indices(shape, padding_mask, mask_prob, mask_length, "static", 0.0,
    min_masks, no_overlap=False, require_same_masks=..., mask_dropout=...)` in distribution.
    """
    shape = (int(shape[0]), int(shape[1]))
    _check(shape, mask_prob, mask_length, min_masks)
    batch, time = shape
    if device is None:
        on_lengths = lengths.device if isinstance(lengths, torch.Tensor) else torch.device("cpu")
        device = generator.device if generator is not None else on_lengths
    device = torch.device(device)
    mask = torch.zeros(batch, time, dtype=torch.bool, device=device)
    if batch == 0 or time == 0:
        return mask
    sizes = _valid_lengths(lengths, batch, time, device)
    rounding = torch.rand(1 if lengths is None else batch, generator=generator, device=device)
    expected = mask_prob * sizes.double() / mask_length + rounding.double()
    num = expected.floor().long().clamp(min=min_masks)
    num = torch.where(sizes > 0, num, torch.zeros_like(num))  # an empty row has nothing to mask
    starts_range = torch.where(sizes - mask_length <= num, num + 1, sizes - mask_length)
    most = int(num.max())
    if most > 0:
        # `num` distinct starts uniform in [0, starts_range): the smallest random keys of the range
        width = int(starts_range.max())
        keys = torch.rand(batch, width, generator=generator, device=device, dtype=torch.float64)
        keys = keys.masked_fill(torch.arange(width, device=device) >= starts_range[:, None], 2.0)
        starts = keys.topk(most, dim=1, largest=False, sorted=True).indices
        positions = starts[:, :, None] + torch.arange(mask_length, device=device)
        valid = (torch.arange(most, device=device) < num[:, None])[:, :, None]
        valid = valid & (positions < sizes[:, None, None])
        positions = torch.where(valid, positions, time).reshape(batch, -1)  # column `time` = bin
        spill = torch.zeros(batch, time + 1, dtype=torch.bool, device=device)
        # row-major strides, one row too: a compiled model guards on the strides of its inputs
        mask = spill.scatter_(1, positions, True)[:, :time].clone(
            memory_format=torch.contiguous_format
        )
    counts = mask.sum(dim=1)
    if require_same_masks and batch > 1 and bool((counts != counts.min()).any()):
        counts = counts.min().expand(batch)
        mask = keep_random(mask, counts, generator)
    if mask_dropout > 0:
        holes = torch.round(counts.double() * mask_dropout).long()
        mask = keep_random(mask, counts - holes, generator)
    return mask


def mask_to_indices(mask: torch.Tensor) -> torch.Tensor:
    """Sorted masked positions `(batch, count)` of a mask whose rows all mask `count` frames."""
    counts = mask.sum(dim=1)
    if mask.shape[0] and bool((counts != counts[0]).any()):
        raise ConfigError(
            f"rows mask different numbers of frames ({counts.tolist()}); "
            "use compute_mask(..., require_same_masks=True)"
        )
    count = int(counts[0]) if mask.shape[0] else 0
    # nonzero lists (row, column) pairs in row-major order: each row's positions come sorted
    return mask.nonzero()[:, 1].reshape(mask.shape[0], count)


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpidR's collator form: masked positions `(batch, count)`, the same count for every row.

    Equivalent to `mask_to_indices(compute_mask(..., require_same_masks=True))`; SpidR uses
    ``min_masks=2`` (its default here).
    """
    mask = compute_mask(
        shape, mask_prob, mask_length, min_masks, lengths, generator, require_same_masks=True
    )
    return mask_to_indices(mask)


def indices_to_mask(indices: torch.Tensor, time: int) -> torch.Tensor:
    """Boolean mask `(batch, time)` from masked positions `(batch, count)`."""
    mask = torch.zeros(indices.shape[0], time, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices.long(), True)
