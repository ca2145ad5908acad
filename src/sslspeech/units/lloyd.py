"""The k-means algorithms over `Frames`: greedy k-means++, Lloyd passes, mini-batch updates.

`Frames` are rows read block by block: an in-memory tensor (`TensorFrames`) or a store streamed
from disk (`sslspeech.features.stream.StoreFrames`). A Lloyd pass reads each block once, finds
the nearest centroid of its rows chunk by chunk (one GEMM `||c||^2 - 2 x.c` per chunk into a
reused buffer, then argmin), and accumulates per-cluster sums (float32 partials added into
float64) and counts; memory is O(k D + block), whatever the number of frames. With several
processes (`Ranks`), each reads its share of the blocks and the sums are all-reduced: block
boundaries do not depend on the number of processes, so N processes compute what one does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from sslspeech.features.stream import default_block_rows

CHUNK_ENTRIES = {"cpu": 1 << 19, "cuda": 1 << 26}  # rows x k distances per GEMM (CPU: 2 MB)
SUM_ROWS = 16384  # rows summed in float32 before adding into the float64 total


class Frames(Protocol):
    """Rows to cluster, read block by block (fixed `block_rows` boundaries)."""

    num_frames: int
    dim: int
    block_rows: int

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as float32 (at most `block_rows`; may be a reused buffer)."""
        ...

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The given rows as a new float32 tensor."""
        ...

    def describe(self) -> str:
        """Data size, for the log."""
        ...


class TensorFrames:
    """An in-memory (N, D) tensor as `Frames` (blocks are views)."""

    def __init__(self, x: torch.Tensor, block_rows: int | None = None) -> None:
        self.x = x
        self.num_frames, self.dim = int(x.shape[0]), int(x.shape[1])
        self.block_rows = block_rows or default_block_rows(self.dim)

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.x[start:stop]

    def take(self, rows: np.ndarray) -> torch.Tensor:
        return self.x[torch.as_tensor(rows, device=self.x.device)]

    def describe(self) -> str:
        size = self.x.numel() * self.x.element_size() / 2**20
        return f"{self.num_frames} frames x {self.dim} in memory ({size:.1f} MiB)"


@dataclass(frozen=True)
class Ranks:
    """This process's share of the work: `rank` of `world` (torch.distributed when joined)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The joined process group's rank and size, else one process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def blocks(self, frames: Frames) -> range:
        """Indices of the blocks this rank reads (a contiguous share)."""
        total = math.ceil(frames.num_frames / frames.block_rows)
        return range(total * self.rank // self.world, total * (self.rank + 1) // self.world)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values on every rank, in place."""
        if self.world > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor`, concatenated in rank order."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)


def chunk_rows(k: int, chunk_size: int | None, device: torch.device) -> int:
    """Rows per distance GEMM: `chunk_size`, else about 2 MB of distances on CPU (they stay in
    cache for the argmin), 256 MB on GPU."""
    if chunk_size is not None:
        return max(1, chunk_size)
    budget = CHUNK_ENTRIES["cpu" if device.type == "cpu" else "cuda"]
    return max(128, budget // max(k, 1))


class Nearest:
    """Nearest centroid of row chunks into buffers reused from chunk to chunk."""

    def __init__(self, centroids: torch.Tensor, rows: int) -> None:
        k = centroids.shape[0]
        device, dtype = centroids.device, centroids.dtype
        self.centroids = centroids
        self.rows = rows
        self._c_sq = (centroids * centroids).sum(1)[None, :]
        self._dot = torch.empty(rows, k, device=device, dtype=dtype)
        self._best = torch.empty(rows, device=device, dtype=dtype)
        self._norms = torch.empty(rows, device=device, dtype=dtype)
        self._labels = torch.empty(rows, dtype=torch.long, device=centroids.device)
        # Few dims, many centroids: one GEMM of [x, 1] by [-2c, ||c||^2] beats addmm's extra
        # pass over the (rows, k) output (17% on 39-dim MFCC, k=100); the copy of x costs more
        # than it saves when dim >= k.
        self._augmented: torch.Tensor | None = None
        if centroids.shape[1] < k:
            self._augmented = torch.ones(rows, centroids.shape[1] + 1, device=device, dtype=dtype)
            self._weights = torch.cat([-2.0 * centroids, self._c_sq.T], 1).T

    def __call__(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, ||c||^2 - 2 x.c of the nearest c) of at most `rows` rows: the argmin does
        not need ||x||^2. Views of the buffers, valid until the next call."""
        m = chunk.shape[0]
        if self._augmented is None:
            dot = torch.addmm(self._c_sq, chunk, self.centroids.T, alpha=-2.0, out=self._dot[:m])
        else:
            augmented = self._augmented[:m]
            augmented[:, :-1].copy_(chunk)
            dot = torch.mm(augmented, self._weights, out=self._dot[:m])
        best, labels = self._best[:m], self._labels[:m]
        if dot.device.type == "cpu":  # numpy's SIMD argmin: 2-3x faster than torch.min(dim=1)
            np.argmin(dot.numpy(), axis=1, out=labels.numpy())
            torch.gather(dot, 1, labels[:, None], out=best[:, None])
        else:
            torch.min(dot, 1, out=(best, labels))
        return labels, best

    def squared_norms(self, chunk: torch.Tensor) -> torch.Tensor:
        """||x||^2 of each row (a buffer view)."""
        return torch.linalg.vector_norm(chunk, dim=1, out=self._norms[: chunk.shape[0]]).square_()

    def distances(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, squared distances to the nearest centroid), clamped at 0 (rounding)."""
        labels, best = self(chunk)
        return labels, best.add_(self.squared_norms(chunk)).clamp_(min=0.0)


def assign(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of `x` and its squared distance, chunk by chunk."""
    centroids = centroids.to(x.device, x.dtype)
    nearest = Nearest(centroids, min(chunk_rows(centroids.shape[0], chunk_size, x.device), len(x)))
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], max(nearest.rows, 1)):
        chunk_labels, chunk_dists = nearest.distances(x[start : start + nearest.rows])
        labels[start : start + nearest.rows] = chunk_labels
        dists[start : start + nearest.rows] = chunk_dists
    return labels, dists


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run torch ops on one CPU thread inside the block: for thousands of tiny ops, a parallel
    region's barrier costs more than the op (10x more on shared cores), not less."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def _blocks(
    frames: Frames, ranks: Ranks, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, rows on `device`) of each block of this rank."""
    for block in ranks.blocks(frames):
        start = block * frames.block_rows
        yield (
            start,
            frames.read(start, min(start + frames.block_rows, frames.num_frames)).to(device),
        )


@dataclass
class PassStats:
    """What one assignment pass sums up (over every rank): float64 on the centroids' device."""

    sums: torch.Tensor
    """(k, D) sum of the rows of each cluster."""
    counts: torch.Tensor
    """(k,) rows per cluster."""
    inertia: float
    """Sum of squared distances to the nearest centroid."""
    squared_norms: float
    """Sum of the rows' squared norms (with the sums: the data's variance)."""


def assignment_pass(
    frames: Frames,
    centroids: torch.Tensor,
    ranks: Ranks,
    chunk_size: int | None = None,
    squared_norms: float | None = None,
) -> PassStats:
    """One pass over this rank's blocks, all-reduced (a single collective per pass).

    The rows' total squared norm is summed unless given (it is the same on every pass)."""
    k, d = centroids.shape
    stats = torch.zeros(k * d + k + 2, dtype=torch.float64, device=centroids.device)
    sums, counts, totals = stats[: k * d].view(k, d), stats[k * d : k * d + k], stats[k * d + k :]
    nearest = Nearest(centroids, chunk_rows(k, chunk_size, centroids.device))
    partial = torch.zeros(k, d, dtype=centroids.dtype, device=centroids.device)
    for _, block in _blocks(frames, ranks, centroids.device):
        pending = 0
        for start in range(0, block.shape[0], nearest.rows):
            chunk = block[start : start + nearest.rows]
            labels, best = nearest(chunk)
            totals[0] += best.sum(dtype=torch.float64)
            if squared_norms is None:
                totals[1] += nearest.squared_norms(chunk).sum(dtype=torch.float64)
            counts += torch.bincount(labels, minlength=k)
            partial.index_add_(0, labels, chunk)
            pending += chunk.shape[0]
            if pending >= SUM_ROWS or start + nearest.rows >= block.shape[0]:
                sums += partial  # per block: a block's sums do not depend on the ranks
                partial.zero_()
                pending = 0
    ranks.sum(stats)
    partial_inertia, norms = totals.tolist()
    norms = norms if squared_norms is None else squared_norms
    total = partial_inertia + norms
    return PassStats(sums, counts, 0.0 if total < 0 else total, norms)  # NaN stays NaN


def farthest_rows(
    frames: Frames, centroids: torch.Tensor, count: int, ranks: Ranks, chunk_size: int | None
) -> torch.Tensor:
    """The `count` rows farthest from their nearest centroid, farthest first (over every rank)."""
    device = centroids.device
    nearest = Nearest(centroids, chunk_rows(centroids.shape[0], chunk_size, device))
    best = torch.full((count,), -1.0, dtype=torch.float64, device=device)
    rows = torch.full((count,), -1, dtype=torch.long, device=device)
    for first, block in _blocks(frames, ranks, device):
        for start in range(0, block.shape[0], nearest.rows):
            _, dists = nearest.distances(block[start : start + nearest.rows])
            index = torch.arange(first + start, first + start + dists.shape[0], device=device)
            candidates, candidate_rows = torch.cat([best, dists.double()]), torch.cat([rows, index])
            top = torch.topk(candidates, count).indices
            best, rows = candidates[top], candidate_rows[top]
    best, rows = ranks.gather(best), ranks.gather(rows)
    order = torch.argsort(rows, stable=True)  # ties go to the lowest row, as with one process
    order = order[torch.argsort(best[order], descending=True, stable=True)]
    chosen = rows[order][:count].cpu().numpy()
    return frames.take(chosen).to(device)


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
    for iteration in range(1, max_iter + 1):
        stats = assignment_pass(frames, centroids, ranks, chunk_size, norms)
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


def inertia(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None) -> float:
    """Sum of squared distances to the nearest centroid, accumulated exactly in float64."""
    rows = chunk_rows(centroids.shape[0], chunk_size, x.device)
    total = 0.0
    centroids = centroids.to(x.device, x.dtype)
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        labels, _ = assign(chunk, centroids, rows)
        total += float(((chunk.double() - centroids[labels].double()) ** 2).sum())
    return total
