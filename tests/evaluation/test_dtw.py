"""Batched DTW against a plain loop written from the fixture README's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslspeech.evaluation.dtw import angular_distance, dtw_lattices, normalize_frames, pair_dtw


def reference_dtw(d: np.ndarray) -> float:
    """Cost C[-1,-1] / number of cells of the greedy back-traced path (float32 like fastabx)."""
    n, m = d.shape
    cost = np.zeros((n, m), dtype=np.float32)
    for i in range(n):
        for j in range(m):
            previous = [
                cost[i - 1, j] if i else np.inf,
                cost[i - 1, j - 1] if i and j else np.inf,
                cost[i, j - 1] if j else np.inf,
            ]
            cost[i, j] = d[i, j] + (min(previous) if i or j else np.float32(0))
    i, j, length = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return float(cost[-1, -1] / np.float32(length + i + j))


def test_lattices_match_reference_with_ties() -> None:
    """Cost and path length in both orientations, including exact ties (quantised distances),
    where the back-trace's preference order decides the path length."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = 5, 9
    distances = torch.rand(200, rows, cols, generator=generator)
    distances[:100] = (distances[:100] * 2).round() / 2  # many exact ties
    valid_cols = torch.randint(1, cols + 1, (200,), generator=generator)
    cost, path, path_t = dtw_lattices(distances, valid_cols)
    lengths_differ = 0
    for b in range(200):
        lattice = distances[b, :, : valid_cols[b]].numpy()
        assert math.isclose(float(cost[b] / path[b]), reference_dtw(lattice), rel_tol=1e-6)
        assert math.isclose(float(cost[b] / path_t[b]), reference_dtw(lattice.T), rel_tol=1e-6)
        lengths_differ += int(path[b] != path_t[b])
    assert lengths_differ > 0  # the transposed orientation really is exercised


@pytest.mark.parametrize("dense_factor", [0.0, math.inf])
def test_pair_dtw_on_tokens(dense_factor: float) -> None:
    """Token pairs of mixed lengths (chunked by length) equal the per-pair reference, with the
    frame distances from per-pair copies (0) or from one matmul per chunk (inf)."""
    generator = torch.Generator().manual_seed(1)
    lengths = np.array([1, 3, 7, 2, 12, 5, 1, 9])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    frames = normalize_frames(torch.randn(int(lengths.sum()), 6, generator=generator))
    first, second = np.triu_indices(len(lengths), 1)
    first, second = np.concatenate([first, [3, 0]]), np.concatenate([second, [3, 6]])  # u == v
    cost, path_first, path_second = pair_dtw(
        frames, starts, lengths, first, second, budget=300, dense_factor=dense_factor
    )
    for k, (u, v) in enumerate(zip(first, second, strict=True)):
        x = frames[starts[u] : starts[u] + lengths[u]]
        y = frames[starts[v] : starts[v] + lengths[v]]
        lattice = angular_distance(x[None], y[None])[0].numpy()
        # arccos near 1 is only sqrt(eps)-accurate in float32: on a self-pair (u == v) the
        # per-pair and the one-matmul dot products round differently (up to ~5e-5 after / pi).
        for path, oriented in ((path_first, lattice), (path_second, lattice.T)):
            expected = reference_dtw(oriented)
            assert math.isclose(float(cost[k] / path[k]), expected, rel_tol=1e-5, abs_tol=1e-4)


def test_normalize_frames_singularity() -> None:
    """Rows become unit vectors plus a 1e-12 border; a zero row becomes 1/sqrt(D) with -2e-12,
    so two zero frames are at distance 0 and a zero frame is not at distance 0 from others."""
    frames = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = normalize_frames(frames)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0, 0.0, 1e-12]))
    assert torch.allclose(out[1], torch.tensor([0.5, 0.5, 0.5, 0.5, -2e-12]))
    distance = angular_distance(out[None], out[None])[0]
    assert distance[1, 1] == 0 and distance[0, 1] > 0.2
