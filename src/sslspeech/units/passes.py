"""Assignment passes over `Frames`: the nearest centroid of every row, and per-cluster sums.

`Frames` are rows read block by block: an in-memory tensor (`TensorFrames`) or a store streamed
from disk (`sslspeech.features.stream.StoreFrames`). A pass reads each block once, finds the
nearest centroid of its rows chunk by chunk (one GEMM `||c||^2 - 2 x.c` per chunk into a
reused buffer, then argmin), and accumulates per-cluster sums (float32 partials added into
float64) and counts; memory is O(k D + block), whatever the number of frames. With several
processes (`Ranks`), each reads its share of the blocks and the sums are all-reduced: block
boundaries do not depend on the number of processes, so N processes compute what one does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
        k, d = centroids.shape
        device, dtype = centroids.device, centroids.dtype
        self.rows = rows
        self._dot = torch.empty(rows, k, device=device, dtype=dtype)
        self._best = torch.empty(rows, device=device, dtype=dtype)
        self._second = torch.empty(rows, device=device, dtype=dtype)
        self._norms = torch.empty(rows, device=device, dtype=dtype)
        self._labels = torch.empty(rows, dtype=torch.long, device=centroids.device)
        # Few dims, many centroids: one GEMM of [x, 1] by [-2c, ||c||^2] beats addmm's extra
        # pass over the (rows, k) output (17% on 39-dim MFCC, k=100); the copy of x costs more
        # than it saves when dim >= k.
        self._augmented = torch.ones(rows, d + 1, device=device, dtype=dtype) if d < k else None
        self.use(centroids)

    def use(self, centroids: torch.Tensor) -> None:
        """Compare with these centroids (same shape, device and dtype), keeping the buffers:
        fresh ones cost page faults on every Lloyd pass."""
        self.centroids = centroids
        self._c_sq = (centroids * centroids).sum(1)[None, :]
        if self._augmented is not None:
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

    def two_nearest(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labels, ||c||^2 - 2 x.c of the nearest c, the same of the second-nearest) of each
        row (k >= 2). Views of the buffers, valid until the next call."""
        labels, best = self(chunk)
        dot, second = self._dot[: chunk.shape[0]], self._second[: chunk.shape[0]]
        dot.scatter_(1, labels[:, None], math.inf)
        if dot.device.type == "cpu":
            np.min(dot.numpy(), axis=1, out=second.numpy())
        else:
            torch.amin(dot, 1, out=second)
        return labels, best, second

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


class _Share:
    """One worker's part of a pass: sums, counts and totals of the chunks it was given."""

    def __init__(self, centroids: torch.Tensor, rows: int) -> None:
        k, d = centroids.shape
        self.nearest = Nearest(centroids, rows)
        self.stats = torch.zeros(k * d + k + 2, dtype=torch.float64, device=centroids.device)
        self._partial = torch.zeros(k, d, dtype=centroids.dtype, device=centroids.device)
        self.with_norms = True

    def reset(self, centroids: torch.Tensor, with_norms: bool) -> None:
        """Start a pass against `centroids`."""
        self.nearest.use(centroids)
        self.stats.zero_()
        self.with_norms = with_norms

    def add(self, chunks: list[torch.Tensor]) -> None:
        """Accumulate these chunks of one block (float32 partial sums, flushed in float64)."""
        k, d = self._partial.shape
        sums, counts = self.stats[: k * d].view(k, d), self.stats[k * d : k * d + k]
        totals = self.stats[k * d + k :]
        pending = 0
        for index, chunk in enumerate(chunks):
            labels, best = self.nearest(chunk)
            totals[0] += best.sum(dtype=torch.float64)
            if self.with_norms:
                totals[1] += self.nearest.squared_norms(chunk).sum(dtype=torch.float64)
            counts += torch.bincount(labels, minlength=k)
            self._partial.index_add_(0, labels, chunk)
            pending += chunk.shape[0]
            if pending >= SUM_ROWS or index == len(chunks) - 1:
                sums += self._partial  # per block: a block's sums do not depend on the ranks
                self._partial.zero_()
                pending = 0


class AssignmentPasses:
    """Passes over this rank's blocks of `frames`, all-reduced (a single collective per
    pass), with the workers' buffers kept from pass to pass.

    On CPU, each of torch's threads takes every n-th chunk of a block and runs its ops on one
    thread: no barrier per op, which on shared cores costs more than the op."""

    def __init__(self, frames: Frames, ranks: Ranks, chunk_size: int | None = None) -> None:
        self.frames, self.ranks, self.chunk_size = frames, ranks, chunk_size
        self._shares: list[_Share] = []
        self._key: tuple[object, ...] = ()

    def _workers(self, centroids: torch.Tensor, rows: int) -> list[_Share]:
        workers = torch.get_num_threads() if centroids.device.type == "cpu" else 1
        key = (centroids.shape, centroids.device, centroids.dtype, rows, workers)
        if key != self._key:
            self._shares, self._key = [_Share(centroids, rows) for _ in range(workers)], key
        return self._shares

    def __call__(self, centroids: torch.Tensor, squared_norms: float | None = None) -> PassStats:
        """Assign every row to its nearest centroid and sum up; the rows' total squared norm
        is summed unless given (it is the same on every pass)."""
        k, d = centroids.shape
        device = centroids.device
        rows = chunk_rows(k, self.chunk_size, device)
        shares = self._workers(centroids, rows)
        for share in shares:
            share.reset(centroids, squared_norms is None)
        with one_thread_on_cpu(device), ThreadPoolExecutor(len(shares)) as pool:
            for _, block in _blocks(self.frames, self.ranks, device):
                chunks = [block[start : start + rows] for start in range(0, block.shape[0], rows)]
                parts = [
                    pool.submit(share.add, chunks[w :: len(shares)])
                    for w, share in enumerate(shares)
                ]
                for part in parts:
                    part.result()  # waits, and raises what the worker raised
        stats = shares[0].stats.clone()
        for share in shares[1:]:
            stats += share.stats
        self.ranks.sum(stats)
        sums, counts = stats[: k * d].view(k, d), stats[k * d : k * d + k]
        partial_inertia, norms = stats[k * d + k :].tolist()
        norms = norms if squared_norms is None else squared_norms
        total = partial_inertia + norms
        return PassStats(sums, counts, 0.0 if total < 0 else total, norms)  # NaN stays NaN


def assignment_pass(
    frames: Frames,
    centroids: torch.Tensor,
    ranks: Ranks,
    chunk_size: int | None = None,
    squared_norms: float | None = None,
) -> PassStats:
    """One pass over this rank's blocks (see `AssignmentPasses`)."""
    return AssignmentPasses(frames, ranks, chunk_size)(centroids, squared_norms)


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
