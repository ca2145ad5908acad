"""The k-means algorithms over `Frames`: greedy k-means++, Lloyd passes, mini-batch updates.

Lloyd passes over in-memory frames skip the rows whose centroid cannot have changed
(`sslspeech.units.bounds`); streamed frames get full passes (`sslspeech.units.passes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sslspeech.units.bounds import BoundedPasses, worth_bounds
from sslspeech.units.passes import (
    AssignmentPasses,
    Frames,
    PassStats,
    Ranks,
    TensorFrames,
    assign,
    assignment_pass,
    farthest_rows,
    one_thread_on_cpu,
)


def kmeans_plusplus(
    x: torch.Tensor, k: int, generator: torch.Generator, n_local_trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; the greedy variant scikit-learn uses).

    Each new centre is the best of `2 + ln k` candidates drawn with probability proportional
    to the squared distance to the nearest chosen centre. One step is a few small ops on a
    sample, so it runs on one CPU thread.
    """
    with one_thread_on_cpu(x.device):
        return _greedy_plusplus(x, k, generator, n_local_trials)


def _greedy_plusplus(
    x: torch.Tensor, k: int, generator: torch.Generator, n_local_trials: int | None
) -> torch.Tensor:
    n = x.shape[0]
    trials = n_local_trials or 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    centers = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)

    def distances_to(rows: torch.Tensor) -> torch.Tensor:  # (len(rows), n), float64
        d = torch.addmm(x_sq[rows][:, None], x[rows], x.T, alpha=-2.0).add_(x_sq[None, :])
        return d.clamp_(min=0.0).double()

    first = torch.randint(n, (1,), generator=generator).to(x.device)
    centers[0] = x[first[0]]
    closest = distances_to(first)[0]
    potential = closest.sum()
    for c in range(1, k):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device)
        cumulative = torch.cumsum(closest, 0)
        candidates = torch.searchsorted(cumulative, draws * potential).clamp_(max=n - 1)
        cand_dists = torch.minimum(distances_to(candidates), closest[None, :])
        cand_potential = cand_dists.sum(1)
        best = int(cand_potential.argmin())
        potential, closest = cand_potential[best], cand_dists[best]
        centers[c] = x[candidates[best]]
    return centers


@dataclass
class FitResult:
    """Centroids of one run and what it took."""

    centroids: torch.Tensor
    inertia: float
    """Inertia measured on the last pass (before its update: an upper bound for `centroids`)."""
    iterations: int


def mean_variance(stats: PassStats, num_frames: int) -> float:
    """Mean over dimensions of the per-dimension variance of the frames."""
    mean = stats.sums.sum(0) / num_frames
    return max(0.0, (stats.squared_norms / num_frames - float(mean @ mean)) / stats.sums.shape[1])


def lloyd(
    frames: Frames | torch.Tensor,
    init: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-4,
    inertia_tol: float = 1e-3,
    chunk_size: int | None = None,
    ranks: Ranks | None = None,
) -> FitResult:
    """Lloyd passes until the centre shift is below `tol` x the mean feature variance
    (scikit-learn's rule), or a pass lowers the inertia by less than the fraction
    `inertia_tol` (0: only if it rises); at most `max_iter` passes. Empty clusters move onto
    the farthest rows (scikit-learn's rule; one extra pass when it happens)."""
    frames = TensorFrames(frames) if isinstance(frames, torch.Tensor) else frames
    ranks = ranks or Ranks()
    centroids = init.clone()
    threshold: float | None = None
    norms: float | None = None
    last = math.inf
    iteration = 0
    passes: AssignmentPasses | BoundedPasses = AssignmentPasses(frames, ranks, chunk_size)
    if worth_bounds(frames, ranks, init.shape[0]):
        passes = BoundedPasses(frames, chunk_size)
    for iteration in range(1, max_iter + 1):
        stats = passes(centroids, norms)
        if threshold is None:
            threshold = tol * mean_variance(stats, frames.num_frames)
            norms = stats.squared_norms
        if not math.isfinite(stats.inertia):
            return FitResult(centroids, stats.inertia, iteration)
        if last - stats.inertia < inertia_tol * last:
            return FitResult(centroids, stats.inertia, iteration)
        last = stats.inertia
        empty = torch.nonzero(stats.counts == 0).flatten()
        if empty.numel():
            far = farthest_rows(frames, centroids, empty.numel(), ranks, chunk_size)
            stats.sums[empty] = far.double()
            stats.counts[empty] = 1.0
        updated = (stats.sums / stats.counts[:, None]).to(centroids.dtype)
        shift = float(((updated - centroids) ** 2).sum())
        centroids = updated
        if shift <= threshold:
            break
    return FitResult(centroids, last, iteration)


def minibatch(
    frames: Frames | torch.Tensor,
    init: torch.Tensor,
    generator: torch.Generator,
    max_iter: int = 100,
    batch_size: int = 10000,
    max_no_improvement: int | None = 10,
    chunk_size: int | None = None,
) -> FitResult:
    """Mini-batch k-means (Sculley 2010) with per-centre running means, `max_iter` epochs of
    batches of random rows (read from the frames batch by batch).

    Stops early when the smoothed batch inertia has not improved for `max_no_improvement`
    steps. Centres no batch point ever reached are moved onto random rows after each epoch.
    """
    frames = TensorFrames(frames) if isinstance(frames, torch.Tensor) else frames
    n, k, device = frames.num_frames, init.shape[0], init.device
    centroids = init.clone().double()
    counts = torch.zeros(k, dtype=torch.float64, device=device)
    steps = max(1, math.ceil(max_iter * n / batch_size))
    per_epoch = max(1, n // batch_size)
    alpha = min(1.0, 2.0 * batch_size / (n + 1))
    smoothed, best, stale = math.inf, math.inf, 0
    step = 0
    for step in range(1, steps + 1):
        rows = torch.randint(n, (min(batch_size, n),), generator=generator).sort().values
        batch = frames.take(rows.numpy()).to(device).double()
        labels, dists = assign(batch, centroids, chunk_size)
        hits = torch.bincount(labels, minlength=k).double()
        sums = torch.zeros_like(centroids).index_add_(0, labels, batch)
        total = counts + hits
        moved = hits > 0
        centroids[moved] = (centroids[moved] * counts[moved, None] + sums[moved]) / total[
            moved, None
        ]
        counts = total
        if step % per_epoch == 0 and bool((counts == 0).any()):
            empty = torch.nonzero(counts == 0).flatten()
            picks = torch.randint(n, (empty.numel(),), generator=generator).sort().values
            centroids[empty] = frames.take(picks.numpy()).to(device).double()
        batch_inertia = float(dists.sum()) / batch.shape[0]
        smoothed = (
            batch_inertia
            if math.isinf(smoothed)
            else (1 - alpha) * smoothed + alpha * batch_inertia
        )
        if smoothed < best:
            best, stale = smoothed, 0
        else:
            stale += 1
        if max_no_improvement is not None and stale >= max_no_improvement:
            break
    final = centroids.to(init.dtype)
    return FitResult(final, assignment_pass(frames, final, Ranks(), chunk_size).inertia, step)
