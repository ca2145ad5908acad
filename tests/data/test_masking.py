"""Span masks: distribution against fairseq's definition, padding, determinism, SpidR form.

The expected values come from the definition of fairseq's `compute_mask_indices` (static spans,
overlap allowed): analytically for one row, and from a literal numpy re-implementation (loops,
`np.random.choice` without replacement) for the batch-level `require_same_masks` step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslspeech.data.masking import (
    compute_mask,
    compute_mask_indices,
    indices_to_mask,
    mask_to_indices,
)
from sslspeech.errors import ConfigError


def expected_coverage(sz: int, mask_prob: float, mask_length: int, min_masks: int) -> np.ndarray:
    """P(frame p is masked) for one row of `sz` valid frames, exactly, from the definition."""
    x = mask_prob * sz / mask_length
    low = math.floor(x)
    coverage = np.zeros(sz)
    for num, weight in ((low, 1 - (x - low)), (low + 1, x - low)):
        num = max(min_masks, num)
        if weight == 0:
            continue
        starts = num + 1 if sz - mask_length <= num else sz - mask_length
        total = math.comb(starts, num)
        for p in range(sz):
            covering = max(0, min(p, starts - 1) - max(0, p - mask_length + 1) + 1)
            coverage[p] += weight * (1 - math.comb(starts - covering, num) / total)
    return coverage


def reference_mask(shape, sizes, mask_prob, mask_length, min_masks, rng) -> np.ndarray:
    """fairseq's algorithm written out literally (padding given as valid sizes per row)."""
    batch = shape[0]
    mask = np.zeros(shape, dtype=bool)
    chosen = []
    for row in range(batch):
        sz = sizes[row]
        num = max(min_masks, int(mask_prob * sz / float(mask_length) + rng.random()))
        min_len = mask_length
        if sz - min_len <= num:
            min_len = sz - num - 1
        starts = rng.choice(sz - min_len, num, replace=False)
        idc = np.asarray([s + k for s in starts for k in range(mask_length)])
        chosen.append(np.unique(idc[idc < sz]))
    fewest = min(len(c) for c in chosen)
    for row, idc in enumerate(chosen):
        if len(idc) > fewest:
            idc = rng.choice(idc, fewest, replace=False)
        mask[row, idc] = True
    return mask


@pytest.mark.parametrize(
    ("sz", "mask_prob", "mask_length", "min_masks"),
    [(780, 0.8, 10, 2), (63, 0.65, 10, 2), (11, 0.8, 10, 2), (5, 0.5, 10, 2), (40, 0.3, 1, 0)],
)
def test_single_row_distribution_matches_definition(sz, mask_prob, mask_length, min_masks):
    """Per-frame masking probability and mean masked count over 4000 independent rows equal the
    exact values of the definition (within 4.5 standard errors); includes the short-row case
    where the start range becomes num + 1, and mask_length 1."""
    rows, time = 4000, sz + 7
    generator = torch.Generator().manual_seed(1234)
    lengths = torch.full((rows,), sz)
    mask = compute_mask(
        (rows, time),
        mask_prob,
        mask_length,
        min_masks,
        lengths,
        generator,
        require_same_masks=False,
    ).numpy()
    assert not mask[:, sz:].any()
    coverage = expected_coverage(sz, mask_prob, mask_length, min_masks)
    counts = mask.sum(1)
    standard_error = counts.std() / math.sqrt(rows) + 1e-9
    assert abs(counts.mean() - coverage.sum()) < 4.5 * standard_error + 1e-6
    frequency = mask[:, :sz].mean(0)
    tolerance = 4.5 * np.sqrt(coverage * (1 - coverage) / rows) + 2e-3
    assert np.all(np.abs(frequency - coverage) <= tolerance)


def test_batch_with_padding_matches_reference_implementation():
    """require_same_masks with padded rows: the distribution of the common masked count and of
    each row's per-frame frequency match the literal fairseq algorithm (two-sample checks)."""
    sizes, time, draws = [50, 37, 20, 12], 50, 3000
    generator = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(7)
    ours = np.stack(
        [
            compute_mask((4, time), 0.65, 5, 2, torch.tensor(sizes), generator).numpy()
            for _ in range(draws)
        ]
    )
    ref = np.stack([reference_mask((4, time), sizes, 0.65, 5, 2, rng) for _ in range(draws)])
    for masks in (ours, ref):
        counts = masks.sum(2)
        assert (counts == counts[:, :1]).all()  # same count in every row
        for row, size in enumerate(sizes):
            assert not masks[:, row, size:].any()
    ours_counts, ref_counts = ours.sum(2)[:, 0], ref.sum(2)[:, 0]
    se = math.sqrt(ours_counts.var() / draws + ref_counts.var() / draws)
    assert abs(ours_counts.mean() - ref_counts.mean()) < 4.5 * se
    bins = np.arange(0, time + 2)
    tv = 0.5 * np.abs(np.histogram(ours_counts, bins)[0] - np.histogram(ref_counts, bins)[0]).sum()
    assert tv / draws < 0.06
    p_ours, p_ref = ours.mean(0), ref.mean(0)
    pooled = (p_ours + p_ref) / 2
    assert np.all(np.abs(p_ours - p_ref) <= 4.5 * np.sqrt(2 * pooled * (1 - pooled) / draws) + 2e-3)


def test_without_lengths_one_rounding_draw_is_shared():
    """lengths=None: every row gets the same number of spans (fairseq's all_num_mask)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        mask = compute_mask((8, 200), 0.5, 1, 0, None, generator, require_same_masks=False)
        assert len(set(mask.sum(1).tolist())) == 1  # length-1 spans never overlap


def test_deterministic_per_seed_and_varies_across_seeds():
    """The same generator seed gives the same mask; other seeds give other masks."""

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return compute_mask((16, 780), 0.8, 10, 2, torch.arange(600, 616) + 150, generator)

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_spidr_form_indices():
    """compute_mask_indices: (B, K) sorted positions, same K per row, inside the valid frames."""
    generator = torch.Generator().manual_seed(5)
    lengths = torch.tensor([100, 80, 64])
    indices = compute_mask_indices((3, 100), 0.65, 10, 2, lengths, generator)
    assert indices.shape[0] == 3 and indices.shape[1] > 0
    assert torch.equal(indices, indices.sort(dim=1).values)
    assert bool((indices < lengths[:, None]).all())
    mask = indices_to_mask(indices, 100)
    assert torch.equal(mask_to_indices(mask), indices)
    with pytest.raises(ConfigError, match="different numbers"):
        mask_to_indices(torch.tensor([[True, False], [True, True]]))


def test_mask_dropout_and_edge_cases():
    """mask_dropout unmasks round(count * p) frames per row; empty rows and shapes are fine."""
    generator = torch.Generator().manual_seed(0)
    full = compute_mask((4, 300), 0.5, 10, 2, None, torch.Generator().manual_seed(1))
    dropped = compute_mask(
        (4, 300), 0.5, 10, 2, None, torch.Generator().manual_seed(1), mask_dropout=0.25
    )
    count = int(full.sum(1)[0])
    assert dropped.sum(1).tolist() == [count - round(count * 0.25)] * 4
    assert bool((dropped <= full).all())
    empty = compute_mask(
        (3, 50), 0.8, 10, 2, torch.tensor([50, 0, 30]), generator, require_same_masks=False
    )
    assert not empty[1].any() and empty[0].any()
    assert compute_mask((0, 10), 0.5, 10).shape == (0, 10)
    assert compute_mask((2, 0), 0.5, 10).shape == (2, 0)
    with pytest.raises(ConfigError, match="mask_length"):
        compute_mask((2, 10), 0.5, 0)
    with pytest.raises(ConfigError, match="mask_prob"):
        compute_mask((2, 10), 1.5, 2)
