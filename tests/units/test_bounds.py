"""Lloyd passes with Hamerly bounds (`units.bounds`) give what full passes give, pass after
pass, while skipping rows; `KMeans.fit` uses them only where they pay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslspeech.units import KMeans, bounds
from sslspeech.units.bounds import BoundedPasses, worth_bounds
from sslspeech.units.passes import AssignmentPasses, Ranks, TensorFrames

K = 256


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """3000 rows in 128 dims around 60 centres of different spreads: k x D = 32768, the
    smallest search the bounds are used for."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=2.0, size=(60, 128))
    labels = rng.integers(0, 60, size=3000)
    spread = rng.uniform(0.3, 1.0, size=(60, 1))
    x = centres[labels] + spread[labels] * rng.normal(size=(3000, 128))
    return torch.from_numpy(x.astype(np.float32))


def test_bounded_passes_equal_full_passes(frames: torch.Tensor) -> None:
    """Fed the same centroids for 20 Lloyd passes (one of them moving a centroid far onto a
    row, as the empty-cluster rule does), the bounded passes give the full passes' counts
    exactly and their sums and inertia within float32 rounding, and skip rows."""
    full, bounded = (
        AssignmentPasses(TensorFrames(frames), Ranks()),
        BoundedPasses(TensorFrames(frames)),
    )
    centroids = frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:K]]
    skipped = []
    for step in range(20):
        expected, got = full(centroids), bounded(centroids)
        assert torch.equal(got.counts, expected.counts), f"pass {step}"
        torch.testing.assert_close(got.sums, expected.sums, rtol=1e-5, atol=1e-3)
        assert got.inertia == pytest.approx(expected.inertia, rel=1e-5)
        assert got.squared_norms == pytest.approx(expected.squared_norms, rel=1e-6)
        skipped.append(bounded.skipped)
        centroids = (expected.sums / expected.counts.clamp(min=1)[:, None]).float()
        if step == 10:
            centroids[0] = frames[-1] * 3  # a far jump: every row's lower bound drops
    assert skipped[0] == 0 and max(skipped) > len(frames) // 2


def test_fit_with_bounds_equals_fit_with_full_passes(
    frames: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`KMeans.fit` on in-memory frames takes the bounded passes here (every pass, until the
    centroids stop moving), and gives the centroids and pass count of full passes."""
    taken = []
    original = bounds.BoundedPasses.__call__

    def spy(self: BoundedPasses, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        taken.append(self.skipped)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bounds.BoundedPasses, "__call__", spy)
    with_bounds = KMeans.fit(frames, K, seed=0, max_iter=30, tol=0, inertia_tol=0)
    assert len(taken) == int(with_bounds.metadata["iterations"]) >= 4  # converged, shift 0
    monkeypatch.setattr("sslspeech.units.lloyd.worth_bounds", lambda *args: False)
    without = KMeans.fit(frames, K, seed=0, max_iter=30, tol=0, inertia_tol=0)
    torch.testing.assert_close(with_bounds.centroids, without.centroids, rtol=1e-5, atol=1e-5)
    assert with_bounds.metadata["iterations"] == without.metadata["iterations"]


def test_bounds_only_where_they_pay(frames: torch.Tensor) -> None:
    """In memory, one process, k x D >= 32768: bounds; MFCC-sized searches (39 dims, k=100),
    k=1 and several processes: full passes."""
    mfcc = TensorFrames(torch.zeros(10, 39))
    assert worth_bounds(TensorFrames(frames), Ranks(), K)
    assert not worth_bounds(TensorFrames(frames), Ranks(), K // 2)
    assert not worth_bounds(mfcc, Ranks(), 100)
    assert not worth_bounds(TensorFrames(frames), Ranks(0, 2), K)
    assert not worth_bounds(TensorFrames(torch.zeros(10, 40000)), Ranks(), 1)
