"""Lloyd passes that skip the rows whose nearest centroid cannot have changed (Hamerly, 2010).

Each row keeps its centroid, an upper bound on the distance to it and a lower bound on the
distance to every other centroid. When the centroids move, the bounds move by the shifts (the
triangle inequality). A row whose upper bound is below both its lower bound and half the
distance from its centroid to the nearest other one keeps its centroid without a GEMM; the
others get the full nearest-centroid search, which also gives their new bounds. The
per-cluster sums change by the rows that moved, and the inertia follows from the sums:
sum ||x||^2 - 2 sum_j c_j . S_j + sum_j n_j ||c_j||^2. The bounds carry a margin for float32
rounding of the distances, so the assignments are those of full passes (a near-tie within
rounding may go either way, as between two BLAS builds).

It pays when the search is dear (k x D large: half the rows or more are skipped after the
first passes on layer features); the rows' state (a label and two float64 bounds: 24 bytes
a row) is kept for in-memory frames only, and streamed stores keep O(k D + block) memory
with full passes (`passes.AssignmentPasses`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TypeGuard

import torch

from sslspeech.units.passes import (
    Frames,
    Nearest,
    PassStats,
    Ranks,
    TensorFrames,
    chunk_rows,
    one_thread_on_cpu,
)

MIN_SEARCH_WORK = 1 << 15
"""Smallest k x D for which bounds pay: below it (MFCC, k=100: 3,900) the bookkeeping per row
costs about what the search saves."""
ROUNDING = 1e-5
"""Margin of the bounds, relative to ||x||^2 + max ||c||^2: the float32 error of a distance
computed as ||x||^2 - 2 x.c + ||c||^2 (about D x 1.2e-7 at worst, far less typically)."""


def worth_bounds(frames: Frames, ranks: Ranks, k: int) -> TypeGuard[TensorFrames]:
    """Whether Lloyd passes over `frames` should keep bounds: in memory, in one process, a
    dear search."""
    return (
        isinstance(frames, TensorFrames)
        and ranks.world == 1
        and k >= 2
        and k * frames.dim >= MIN_SEARCH_WORK
    )


class _Searcher:
    """One worker's buffers (kept from pass to pass) and the changes its rows make to the
    sums in a pass."""

    def __init__(self, centroids: torch.Tensor, rows: int) -> None:
        k, d = centroids.shape
        self.nearest = Nearest(centroids, rows)
        self.sums = torch.zeros(k, d, dtype=torch.float64, device=centroids.device)
        self.counts = torch.zeros(k, dtype=torch.float64, device=centroids.device)

    def reset(self, centroids: torch.Tensor) -> None:
        """Start a pass against `centroids`."""
        self.nearest.use(centroids)
        self.sums.zero_()
        self.counts.zero_()


class BoundedPasses:
    """Assignment passes over in-memory `frames` in one process, skipping settled rows; each
    call returns what `passes.AssignmentPasses` would."""

    def __init__(self, frames: TensorFrames, chunk_size: int | None = None) -> None:
        self.x, self.chunk_size = frames.x, chunk_size
        n, device = self.x.shape[0], self.x.device
        self.labels = torch.full((n,), -1, dtype=torch.long, device=device)
        self.upper = torch.zeros(n, dtype=torch.float64, device=device)
        self.lower = torch.zeros(n, dtype=torch.float64, device=device)
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None
        self.squared_norms = 0.0
        self._searchers: list[_Searcher] = []
        self.skipped = 0
        """Rows that needed no nearest-centroid search in the last pass (this rank's)."""

    def __call__(self, centroids: torch.Tensor, squared_norms: float | None = None) -> PassStats:
        """Assign every row to its nearest centroid and sum up (`squared_norms` is unused: the
        rows' total is summed on the first pass)."""
        k, d = centroids.shape
        if self.sums is None or self.counts is None or self.previous is None:
            self.sums = torch.zeros(k, d, dtype=torch.float64, device=centroids.device)
            self.counts = torch.zeros(k, dtype=torch.float64, device=centroids.device)
            self.squared_norms = float(torch.linalg.vector_norm(self.x.double()) ** 2)
            unsure = torch.arange(self.x.shape[0], device=self.x.device)
        else:
            with one_thread_on_cpu(centroids.device):  # O(rows) ops: no barriers
                unsure = self._unsure(centroids)
        self.skipped = self.x.shape[0] - unsure.numel()
        self._search(centroids, unsure)
        self.previous = centroids.clone()
        sums, counts, norms = self.sums.clone(), self.counts.clone(), self.squared_norms
        c = centroids.double()
        inertia = norms - 2 * float((c * sums).sum()) + float(counts @ (c * c).sum(1))
        return PassStats(sums, counts, max(inertia, 0.0), norms)

    def _unsure(self, centroids: torch.Tensor) -> torch.Tensor:
        """Rows whose centroid may have changed, after moving the bounds by the centroids'
        shifts since the last pass."""
        assert self.previous is not None
        c = centroids.double()
        shift = torch.linalg.vector_norm(c - self.previous.double(), dim=1)
        self.upper += shift[self.labels]
        largest = torch.topk(shift, 2)
        farthest_moved = self.labels == largest.indices[0]
        self.lower -= torch.where(farthest_moved, largest.values[1], largest.values[0])
        half_gap = 0.5 * torch.cdist(c, c).fill_diagonal_(math.inf).min(1).values
        bound = torch.maximum(self.lower, half_gap[self.labels])
        return torch.nonzero(self.upper > bound).flatten()

    def _search(self, centroids: torch.Tensor, unsure: torch.Tensor) -> None:
        """Search the unsure rows chunk by chunk on every CPU thread (each runs its ops on one
        thread); fold the moves into the sums."""
        assert self.sums is not None and self.counts is not None
        device = centroids.device
        rows = chunk_rows(centroids.shape[0], self.chunk_size, device)
        workers = torch.get_num_threads() if device.type == "cpu" else 1
        if len(self._searchers) != workers or self._searchers[0].nearest.rows != rows:
            self._searchers = [_Searcher(centroids, rows) for _ in range(workers)]
        margin = ROUNDING * float((centroids * centroids).sum(1).max())
        chunks = list(torch.split(unsure, rows))
        with one_thread_on_cpu(device), ThreadPoolExecutor(workers) as pool:
            parts = []
            for w, searcher in enumerate(self._searchers):
                searcher.reset(centroids)
                parts.append(pool.submit(self._search_chunks, searcher, chunks[w::workers], margin))
            for part in parts:
                part.result()  # waits, and raises what the worker raised
        for searcher in self._searchers:
            self.sums += searcher.sums
            self.counts += searcher.counts

    def _search_chunks(
        self, searcher: _Searcher, chunks: list[torch.Tensor], margin: float
    ) -> None:
        for rows in chunks:
            x, old = self.x[rows], self.labels[rows]
            first, best, second = searcher.nearest.two_nearest(x)
            norms = searcher.nearest.squared_norms(x).double()
            slack = ROUNDING * norms + margin
            self.upper[rows] = (best.double() + norms + slack).clamp_(min=0).sqrt_()
            self.lower[rows] = (second.double() + norms - slack).clamp_(min=0).sqrt_()
            self.labels[rows] = first
            moved = first != old
            x64, to = x[moved].double(), first[moved]
            ones = torch.ones_like(x64[:, 0])
            searcher.sums.index_add_(0, to, x64)
            searcher.counts.index_add_(0, to, ones)
            came = old[moved] >= 0  # the first pass moves rows from nowhere
            searcher.sums.index_add_(0, old[moved][came], x64[came], alpha=-1)
            searcher.counts.index_add_(0, old[moved][came], ones[came], alpha=-1)
