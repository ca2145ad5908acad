"""K-means models: fit on frames in memory or streamed from a feature store (one process or
many), save as safetensors, load ours or scikit-learn's.

`fit_store` clusters a seeded sample of a store's frames without ever holding them: k-means++
on a small sample, then Lloyd passes that stream the memory-mapped shards block by block (see
`sslspeech.units.lloyd`), so memory is O(k D + block) whatever the store's size; under
torch.distributed each process reads its share and the sums are all-reduced. Seeded: the same
data, seed and device give the same centroids, with any number of processes. Saved as
safetensors (`centroids` + string metadata); `KMeans.load` also imports scikit-learn models
(fairseq's joblib `.km`/`.bin` files) through a restricted unpickler, see `sklearn_compat`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import DataError
from sslspeech.features.stream import StoreFrames, sample_frames
from sslspeech.units.lloyd import FitResult, kmeans_plusplus, lloyd, minibatch
from sslspeech.units.passes import (
    Frames,
    Nearest,
    Ranks,
    TensorFrames,
    assign,
    chunk_rows,
    inertia,
)
from sslspeech.utils.safetensors import load_file, read_header, save_file

log = logging.getLogger(__name__)

KMEANS_FORMAT = "sslspeech.kmeans"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors dtypes centroids may have
ArrayLike = torch.Tensor | np.ndarray
__all__ = ["KMeans", "assign", "fit_frames", "fit_store", "inertia", "lloyd"]


def _as_tensor(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(x)
    if tensor.dim() != 2:
        raise ValueError(f"Expected (num_points, dim). Found: {tuple(tensor.shape)}")
    if tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor.to(device) if device is not None else tensor


def default_init_size(k: int) -> int:
    """Rows k-means++ draws from by default: 8 per centroid, at least 4096 (its cost grows as
    rows x k x dim; Lloyd passes on every frame follow)."""
    return max(4096, 8 * k)


def _plan(
    frames: Frames, k: int, init_size: int, max_iter: int, device: torch.device, ranks: Ranks
) -> str:
    """Data size, memory and estimated time of a fit, for the log before it starts."""
    d = frames.dim
    rows = chunk_rows(k, None, device)
    trials = 2 + int(math.log(k))
    streamed = isinstance(frames, StoreFrames)
    block = frames.block_rows * d * 4 * (streamed + (streamed and device.type != "cpu"))
    memory = {
        "centroids+sums": k * d * 24,
        "block+chunk": block + rows * (k + d) * 4,
        "kmeans++": init_size * (d * 4 + trials * 24) if ranks.rank == 0 else 0,
    }
    per_row = _seconds_per_row(k, d, rows, device)
    per_pass = per_row * frames.num_frames / ranks.world
    plusplus = per_row * init_size * trials * k / rows * 4  # narrow GEMMs: ~4x slower per entry
    parts = ", ".join(f"{name} {size / 2**20:.1f}" for name, size in memory.items())
    return (
        f"{frames.describe()}; k={k} on {device} x {ranks.world} process(es); memory about "
        f"{sum(memory.values()) / 2**20:.0f} MiB per process ({parts}); estimated time "
        f"{plusplus + per_pass * max_iter:.1f} s at most ({plusplus:.1f} s k-means++, "
        f"{per_pass:.2f} s per pass x {max_iter}; compute only, reading from disk may add)"
    )


def _seconds_per_row(k: int, d: int, rows: int, device: torch.device) -> float:
    """Time of one assignment chunk on this device, per row (after a warm-up; GEMM time does
    not depend on the values)."""
    x = torch.ones(min(rows, 4096), d, device=device)
    nearest = Nearest(torch.ones(k, d, device=device), x.shape[0])
    nearest(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    nearest(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / x.shape[0]


def _non_finite(frames: Frames) -> DataError:
    return DataError(
        f"the k-means input ({frames.describe()}) holds NaN or infinite values; "
        "find the utterance with `sslspeech check` and re-extract its features"
    )


def _initial_centroids(
    frames: Frames,
    rows: np.ndarray,
    k: int,
    generator: torch.Generator,
    device: torch.device,
    ranks: Ranks,
) -> torch.Tensor:
    """k-means++ on the sample `rows`, by rank 0, broadcast to every rank."""
    init = torch.full((k, frames.dim), math.nan, device=device)
    if ranks.rank == 0:
        sample = frames.take(rows).to(device)
        if bool(torch.isfinite(sample).all()):
            init = kmeans_plusplus(sample, k, generator)
    if not bool(torch.isfinite(ranks.broadcast(init)).all()):  # so that every rank stops
        raise _non_finite(frames)
    return init


def fit_frames(
    frames: Frames,
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
    ranks: Ranks | None = None,
) -> KMeans:
    """Cluster `frames` into `k` centroids (the options of `KMeans.fit`); with `ranks`, this
    process does its share of every pass and all of them get the same model."""
    if method not in ("lloyd", "minibatch"):
        raise ValueError(f"method must be 'lloyd' or 'minibatch', got {method!r}")
    ranks = ranks or Ranks()
    if method == "minibatch" and ranks.world > 1:
        raise DataError("mini-batch k-means runs in one process; use method='lloyd' to distribute")
    n = frames.num_frames
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, number of points = {n}]")
    device = torch.device(device or "cpu")
    size = min(n, init_size or default_init_size(k))
    if ranks.rank == 0:
        log.info("k-means: %s", _plan(frames, k, size, max_iter, device, ranks))
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    best: FitResult | None = None
    for run in range(n_init):
        rows = np.sort(rng.choice(n, size, replace=False))
        init = _initial_centroids(frames, rows, k, generator, device, ranks)
        if method == "lloyd":
            result = lloyd(frames, init, max_iter, tol, inertia_tol, chunk_size, ranks)
        else:
            result = minibatch(
                frames, init, generator, max_iter, batch_size, max_no_improvement, chunk_size
            )
        if not math.isfinite(result.inertia):  # a NaN outside the k-means++ sample
            raise _non_finite(frames)
        log.debug("k-means run %d: inertia %.6g after %d", run, result.inertia, result.iterations)
        if best is None or result.inertia < best.inertia:
            best = result
    if best is None:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    meta = {
        "format": KMEANS_FORMAT,
        "k": str(k),
        "dim": str(frames.dim),
        "method": method,
        "seed": str(seed),
        "n_init": str(n_init),
        "iterations": str(best.iterations),
        "num_points": str(n),
        "inertia": repr(best.inertia),
        "world_size": str(ranks.world),
    }
    return KMeans(best.centroids, meta)


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

        `method`: "lloyd" (full batch; stops when the centre shift is below `tol` x the mean
        variance, or a pass gains less than `inertia_tol` of the inertia: 0.1% by default,
        about 10-15 passes on MFCC; 0 runs all `max_iter` passes) or "minibatch" (`max_iter`
        epochs of `batch_size` samples, early stop after `max_no_improvement` steps without a
        better smoothed batch inertia). k-means++ draws on at most `init_size` random rows
        (default max(4096, 8 k)). The best of `n_init` runs is kept. `device` is where the
        work happens (default: x's). Inputs are used as float32; sums are accumulated in float64.
        """
        data = _as_tensor(x, device)
        return fit_frames(
            TensorFrames(data),
            k,
            seed,
            method=method,
            max_iter=max_iter,
            tol=tol,
            inertia_tol=inertia_tol,
            batch_size=batch_size,
            max_no_improvement=max_no_improvement,
            n_init=n_init,
            init_size=init_size,
            device=data.device,
            chunk_size=chunk_size,
        )

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
            entries, metadata, _ = read_header(path)
            _centroids_entry(path, entries)
            centroids = load_file(path)["centroids"]
        else:
            from sslspeech.units.sklearn_compat import load_sklearn_centroids

            array, metadata = load_sklearn_centroids(path, trust=trust)
            centroids = torch.as_tensor(array)
        return cls(_checked_centroids(path, centroids), metadata)


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        prefix = handle.read(9)
    if len(prefix) < 9:
        return False
    size = int.from_bytes(prefix[:8], "little")
    return prefix[8:9] == b"{" and size > 0  # read_header judges the size


def _checked_centroids(path: Path, centroids: torch.Tensor) -> torch.Tensor:
    """Refuse a model that would silently give wrong units: no centroid, or non-finite ones."""
    if centroids.dim() != 2 or centroids.shape[0] < 1 or centroids.shape[1] < 1:
        raise DataError(
            f"{path}: k-means centroids have shape {tuple(centroids.shape)}; expected (k, dim) "
            "with k >= 1 and dim >= 1: the model holds no centroid, refit it (sslspeech kmeans)"
        )
    bad = torch.nonzero(~torch.isfinite(centroids).all(1)).flatten().tolist()
    if bad:
        raise DataError(
            f"{path}: k-means centroids {bad[:10]} hold NaN or infinite values (of {len(bad)} "
            "bad, k={centroids.shape[0]}); the model is broken, refit it (sslspeech kmeans)"
        )
    return centroids


def _centroids_entry(path: Path, tensors: Mapping[str, Any]) -> None:
    """The header entry of `centroids` names a floating dtype and a shape."""
    entry = tensors.get("centroids")
    if entry is None:
        raise DataError(f"{path}: safetensors file without a 'centroids' tensor")
    if not isinstance(entry, dict) or entry.get("dtype") not in FLOAT_DTYPES:
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        raise DataError(
            f"{path}: the 'centroids' tensor has dtype {dtype!r} in the safetensors header; "
            f"expected one of {', '.join(FLOAT_DTYPES)}: the file is damaged, refit or re-save it"
        )
    if not isinstance(entry.get("shape"), list) or len(entry["shape"]) != 2:
        raise DataError(
            f"{path}: the 'centroids' tensor has shape {entry.get('shape')!r} in the header; "
            "expected [k, dim]: the file is damaged, refit or re-save it"
        )


def fit_store(
    store: Mapping[str, np.ndarray],
    k: int,
    fraction: float = 0.1,
    seed: int = 0,
    max_frames: int | None = None,
    block_rows: int | None = None,
    **fit_options: Any,
) -> KMeans:
    """Fit k-means on a seeded sample of a store's frames (see `sample_frames`), streamed block
    by block; under torch.distributed, every process takes its share of each pass."""
    frames = sample_frames(store, fraction, seed, max_frames, block_rows=block_rows)
    model = fit_frames(frames, k, seed, ranks=Ranks.current(), **fit_options)
    model.metadata.update(fraction=repr(fraction), options=json.dumps(fit_options, default=str))
    return model
