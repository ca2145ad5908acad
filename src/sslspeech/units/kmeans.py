"""K-means in torch: greedy k-means++ init, full-batch Lloyd or mini-batch updates, CPU or GPU.

Distances are computed in row chunks (`chunk_size` x k at a time), so memory is bounded by the
data itself. Seeded: the same data, seed and device give the same centroids. Saved as
safetensors (`centroids` + string metadata); `KMeans.load` also imports scikit-learn models
(fairseq's joblib `.km`/`.bin` files) through a restricted unpickler, see `sklearn_compat`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sslspeech.errors import DataError
from sslspeech.utils.safetensors import load_file, read_header, save_file

log = logging.getLogger(__name__)

KMEANS_FORMAT = "sslspeech.kmeans"
_SUM_CHUNK = 4096  # rows per float32 partial sum before adding into float64
ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(x)
    if tensor.dim() != 2:
        raise ValueError(f"Expected (num_points, dim). Found: {tuple(tensor.shape)}")
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.to(device) if device is not None else tensor


def _chunk_rows(k: int, chunk_size: int | None, device: torch.device) -> int:
    """Rows per distance chunk: cache-sized on CPU (about 1 MB), up to 2^26 entries on GPU."""
    if chunk_size is not None:
        return max(1, chunk_size)
    budget = 1 << 18 if device.type == "cpu" else 1 << 26
    return max(128, budget // max(k, 1))


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, k) squared euclidean distances, clamped at 0 (the expansion can round below)."""
    c_sq = (centroids * centroids).sum(1)
    x_sq = (x * x).sum(1, keepdim=True)
    return torch.addmm(c_sq[None, :], x, centroids.T, alpha=-2.0).add_(x_sq).clamp_(min=0.0)


def assign(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row of `x` and its squared distance, chunk by chunk.

    The argmin only needs ||c||^2 - 2 x.c; ||x||^2 is added to the minimum afterwards.
    """
    rows = _chunk_rows(centroids.shape[0], chunk_size, x.device)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    centroids = centroids.to(x.device, x.dtype)
    c_sq = (centroids * centroids).sum(1)[None, :]
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        partial = torch.addmm(c_sq, chunk, centroids.T, alpha=-2.0)
        best, labels[start : start + rows] = partial.min(dim=1)
        dists[start : start + rows] = (best + (chunk * chunk).sum(1)).clamp_(min=0.0)
    return labels, dists


def kmeans_plusplus(
    x: torch.Tensor, k: int, generator: torch.Generator, n_local_trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; the greedy variant scikit-learn uses).

    Each new centre is the best of `2 + ln k` candidates drawn with probability proportional
    to the squared distance to the nearest chosen centre.
    """
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


def _relocate_empty(
    sums: torch.Tensor, counts: torch.Tensor, x: torch.Tensor, dists: torch.Tensor
) -> int:
    """Move empty clusters onto the points farthest from their centres (scikit-learn's rule)."""
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() == 0:
        return 0
    far = torch.topk(dists, min(empty.numel(), x.shape[0])).indices
    for cluster, point in zip(empty.tolist(), far.tolist(), strict=False):
        sums[cluster] = x[point].to(sums.dtype)
        counts[cluster] = 1
    return int(empty.numel())


@dataclass
class FitResult:
    """Centroids of one run and what it took."""

    centroids: torch.Tensor
    inertia: float
    iterations: int


def _lloyd_pass(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One assignment pass: labels, distances, float64 per-cluster sums and counts."""
    k = centroids.shape[0]
    labels, dists = assign(x, centroids, chunk_size)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    step = _SUM_CHUNK
    for start in range(0, x.shape[0], step):  # float32 partial sums, float64 total
        partial = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
        partial.index_add_(0, labels[start : start + step], x[start : start + step])
        sums += partial
    counts = torch.bincount(labels, minlength=k).double()
    return labels, dists, sums, counts


def lloyd(
    x: torch.Tensor,
    init: torch.Tensor,
    max_iter: int = 100,
    tol: float = 1e-4,
    inertia_tol: float = 1e-3,
    chunk_size: int | None = None,
) -> FitResult:
    """Full-batch Lloyd iterations until no label changes, the centre shift is below `tol` x
    the mean feature variance (scikit-learn's criteria), or one iteration lowers the inertia
    by less than the fraction `inertia_tol` (0 disables this rule)."""
    centroids = init.clone()
    threshold = tol * float(x.var(dim=0, unbiased=False).double().mean())
    previous: torch.Tensor | None = None
    last_inertia = math.inf
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 (reported after the loop)
        labels, dists, sums, counts = _lloyd_pass(x, centroids, chunk_size)
        current = float(dists.double().sum())
        if previous is not None and torch.equal(labels, previous):
            break
        if last_inertia - current < inertia_tol * last_inertia:
            break
        previous, last_inertia = labels, current
        _relocate_empty(sums, counts, x, dists)
        updated = (sums / counts[:, None]).to(x.dtype)
        shift = float(((updated - centroids) ** 2).sum())
        centroids = updated
        if shift <= threshold:
            break
    return FitResult(centroids, inertia(x, centroids, chunk_size), iteration)


def minibatch(
    x: torch.Tensor,
    init: torch.Tensor,
    generator: torch.Generator,
    max_iter: int = 100,
    batch_size: int = 10000,
    max_no_improvement: int | None = 10,
    chunk_size: int | None = None,
) -> FitResult:
    """Mini-batch k-means (Sculley 2010) with per-centre running means, `max_iter` epochs.

    Stops early when the smoothed batch inertia has not improved for `max_no_improvement`
    steps. Centres no batch point ever reached are moved onto random points after each epoch.
    """
    n, k = x.shape[0], init.shape[0]
    centroids = init.clone().double()
    counts = torch.zeros(k, dtype=torch.float64, device=x.device)
    steps = max(1, math.ceil(max_iter * n / batch_size))
    per_epoch = max(1, n // batch_size)
    alpha = min(1.0, 2.0 * batch_size / (n + 1))
    smoothed, best, stale = math.inf, math.inf, 0
    step = 0
    for step in range(1, steps + 1):
        rows = torch.randint(n, (min(batch_size, n),), generator=generator).to(x.device)
        batch = x[rows].double()
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
            picks = torch.randint(n, (empty.numel(),), generator=generator).to(x.device)
            centroids[empty] = x[picks].double()
        batch_inertia = float(dists.sum()) / batch.shape[0]
        smoothed = (
            batch_inertia
            if math.isinf(smoothed)
            else (1 - alpha) * smoothed + alpha * (batch_inertia)
        )
        if smoothed < best:
            best, stale = smoothed, 0
        else:
            stale += 1
        if max_no_improvement is not None and stale >= max_no_improvement:
            break
    final = centroids.to(x.dtype)
    return FitResult(final, inertia(x, final, chunk_size), step)


def inertia(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None) -> float:
    """Sum of squared distances to the nearest centroid, accumulated exactly in float64."""
    rows = _chunk_rows(centroids.shape[0], chunk_size, x.device)
    total = 0.0
    centroids = centroids.to(x.device, x.dtype)
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        labels, _ = assign(chunk, centroids, rows)
        total += float(((chunk.double() - centroids[labels].double()) ** 2).sum())
    return total


class KMeans:
    """A fitted k-means model: `centroids` (k, D) float32 on CPU and string `metadata`."""

    def __init__(self, centroids: ArrayLike, metadata: Mapping[str, str] | None = None) -> None:
        self.centroids = _as_tensor(centroids).detach().to("cpu", torch.float32).contiguous()
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.centroids.shape[1])

    def __repr__(self) -> str:
        return f"KMeans(k={self.k}, dim={self.dim})"

    @classmethod
    def fit(
        cls,
        x: ArrayLike,
        k: int,
        seed: int = 0,
        *,
        method: str = "lloyd",
        max_iter: int = 100,
        tol: float = 1e-4,
        inertia_tol: float = 1e-3,
        batch_size: int = 10000,
        max_no_improvement: int | None = 10,
        n_init: int = 1,
        init_size: int | None = None,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> KMeans:
        """Cluster the rows of `x` (N, D) into `k` centroids.

        `method`: "lloyd" (full batch; stops when no label changes, the centre shift is below
        `tol` x the mean variance, or an iteration gains less than `inertia_tol` of the inertia:
        0.1% by default, about 10-15 iterations on MFCC; 1e-4 runs ~3x longer for ~1% lower
        inertia)
        or "minibatch" (`max_iter` epochs of `batch_size` samples, early stop after
        `max_no_improvement` steps without a better smoothed batch inertia). k-means++ draws on
        at most `init_size` random rows (default max(10k, 256 k)). The best of `n_init` runs
        (by inertia on all of `x`) is kept. `device` is where the work happens (default: x's).
        Inputs are used as float32; the sums of each update are accumulated in float64.
        """
        if method not in ("lloyd", "minibatch"):
            raise ValueError(f"method must be 'lloyd' or 'minibatch', got {method!r}")
        data = _as_tensor(x, device)
        if data.dtype == torch.float64:
            data = data.float()
        if not 1 <= k <= data.shape[0]:
            raise ValueError(f"k={k} must be in [1, number of points = {data.shape[0]}]")
        if not bool(torch.isfinite(data).all()):
            raise DataError("k-means input holds NaN or infinite values")
        generator = torch.Generator().manual_seed(seed)
        size = min(data.shape[0], init_size or max(10_000, 256 * k))
        best: FitResult | None = None
        for run in range(n_init):
            rows = torch.randperm(data.shape[0], generator=generator)[:size].to(data.device)
            init = kmeans_plusplus(data[rows], k, generator)
            if method == "lloyd":
                result = lloyd(data, init, max_iter, tol, inertia_tol, chunk_size)
            else:
                result = minibatch(
                    data, init, generator, max_iter, batch_size, max_no_improvement, chunk_size
                )
            log.debug(
                "k-means run %d: inertia %.6g after %d", run, result.inertia, result.iterations
            )
            if best is None or result.inertia < best.inertia:
                best = result
        assert best is not None
        meta = {
            "format": KMEANS_FORMAT,
            "k": str(k),
            "dim": str(data.shape[1]),
            "method": method,
            "seed": str(seed),
            "n_init": str(n_init),
            "iterations": str(best.iterations),
            "num_points": str(data.shape[0]),
            "inertia": repr(best.inertia),
        }
        return cls(best.centroids, meta)

    def predict(
        self,
        x: ArrayLike,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Index of the nearest centroid for every row of `x` (N, D): LongTensor (N,) on CPU."""
        data = self._check(x, device)
        labels, _ = assign(data, self.centroids.to(data.device, data.dtype), chunk_size)
        return labels.cpu()

    def inertia(
        self,
        x: ArrayLike,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> float:
        """Sum over rows of `x` of the squared distance to the nearest centroid."""
        data = self._check(x, device)
        return inertia(data, self.centroids.to(data.device, data.dtype), chunk_size)

    def _check(self, x: ArrayLike, device: torch.device | str | None) -> torch.Tensor:
        data = _as_tensor(x, device)
        if data.shape[1] != self.dim:
            raise DataError(f"features have dim {data.shape[1]}, the k-means model {self.dim}")
        return data

    def save(self, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> None:
        """Write centroids and metadata as safetensors (atomically)."""
        meta = {**self.metadata, **(metadata or {}), "format": KMEANS_FORMAT}
        meta.update(k=str(self.k), dim=str(self.dim))
        save_file({"centroids": self.centroids}, path, metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], trust: bool = False) -> KMeans:
        """Load our safetensors file or a scikit-learn (Mini)BatchKMeans joblib/pickle file.

        scikit-learn files are read with a restricted unpickler that builds no object from the
        file (only arrays and plain values); `trust=True` uses `joblib.load` instead, which
        runs arbitrary code from the file: only for files you made yourself.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such k-means file")
        if _is_safetensors(path):
            tensors = load_file(path)
            if "centroids" not in tensors:
                raise DataError(f"{path}: safetensors file without a 'centroids' tensor")
            _, metadata, _ = read_header(path)
            return cls(tensors["centroids"], metadata)
        from sslspeech.units.sklearn_compat import load_sklearn_centroids

        centroids, meta = load_sklearn_centroids(path, trust=trust)
        return cls(centroids, meta)


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        prefix = handle.read(9)
    if len(prefix) < 9:
        return False
    size = int.from_bytes(prefix[:8], "little")
    return prefix[8:9] == b"{" and size > 0  # read_header judges the size


def sample_store_frames(
    store: Mapping[str, np.ndarray],
    fraction: float = 0.1,
    seed: int = 0,
    max_frames: int | None = None,
    fileids: Sequence[str] | None = None,
) -> torch.Tensor:
    """Frames of a random `fraction` of the utterances of a feature store, as one float32 tensor.

    Utterances are drawn without replacement (seeded) until the fraction is reached; with
    `max_frames`, frames are subsampled uniformly down to that many.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keys = list(fileids if fileids is not None else store)
    if not keys:
        raise DataError("cannot fit k-means on an empty feature store")
    generator = torch.Generator().manual_seed(seed)
    count = max(1, round(fraction * len(keys)))
    chosen = sorted(torch.randperm(len(keys), generator=generator)[:count].tolist())
    parts = [np.asarray(store[keys[i]], dtype=np.float32) for i in chosen]
    frames = torch.from_numpy(np.concatenate(parts, axis=0))
    if max_frames is not None and frames.shape[0] > max_frames:
        rows = torch.randperm(frames.shape[0], generator=generator)[:max_frames].sort().values
        frames = frames[rows]
    return frames


def fit_store(
    store: Mapping[str, np.ndarray],
    k: int,
    fraction: float = 0.1,
    seed: int = 0,
    max_frames: int | None = None,
    **fit_options: object,
) -> KMeans:
    """Fit k-means on a random fraction of the utterances of a feature store."""
    frames = sample_store_frames(store, fraction, seed, max_frames)
    model = KMeans.fit(frames, k, seed=seed, **fit_options)  # type: ignore[arg-type]
    model.metadata.update(fraction=repr(fraction), options=json.dumps(fit_options, default=str))
    return model
