"""A seeded sample of a feature store's frames, read block by block from the memory-mapped arrays.

`sample_frames(store, fraction, seed, max_frames)` picks utterances (and, with `max_frames`,
evenly spaced frames among theirs) and returns `StoreFrames`: a virtual (frames, dim) float32
matrix whose rows are copied on demand into one reusable buffer (float16 stores are read as
float16 and converted there), so reading it costs O(block) memory whatever the store's size.
`utterance_frames(store, keys)` is the same matrix over every frame of `keys`, in their order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sslspeech.errors import DataError

BLOCK_BYTES = 32 << 20  # float32 bytes of one block read from the store


def default_block_rows(dim: int) -> int:
    """Rows of one block: about BLOCK_BYTES of float32, at least 4096 rows."""
    return max(4096, BLOCK_BYTES // (4 * max(dim, 1)))


class StoreFrames:
    """Sampled frames of a store: row i of the sample is universe row (i * N + offset) // M,
    where the universe is the chosen utterances' N frames end to end and M the sample size."""

    def __init__(
        self,
        array: Callable[[int], np.ndarray],
        segments: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        dim: int,
        dtype: np.dtype,
        num_frames: int | None = None,
        offset: int = 0,
        utterances: int = 0,
        block_rows: int | None = None,
    ) -> None:
        self._array = array
        self._sources, self._starts, lengths = segments
        self._bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.universe = int(self._bounds[-1])
        self.num_frames = self.universe if num_frames is None else num_frames
        self._offset = offset
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.utterances = utterances
        self.block_rows = block_rows or default_block_rows(dim)
        self._buffer: np.ndarray | None = None

    @property
    def bytes_read_per_pass(self) -> int:
        """Bytes of the store one full pass reads (every sampled frame once)."""
        return self.num_frames * self.dim * self.dtype.itemsize

    def describe(self) -> str:
        """Data size, for the log."""
        sampled = "" if self.num_frames == self.universe else f" of {self.universe}"
        return (
            f"{self.num_frames}{sampled} frames x {self.dim} from {self.utterances} utterances "
            f"({self.dtype.name} store, {self.bytes_read_per_pass / 2**20:.1f} MiB per pass)"
        )

    def _universe_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.num_frames == self.universe:
            return rows
        return (rows * self.universe + self._offset) // self.num_frames

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Sample rows [start, stop) as float32, in the reusable buffer (valid until the next
        read); at most `block_rows` rows."""
        if stop - start > self.block_rows:
            raise ValueError(f"read of {stop - start} rows exceeds block_rows={self.block_rows}")
        if self._buffer is None:
            self._buffer = np.empty((self.block_rows, self.dim), dtype=np.float32)
        out = self._buffer[: stop - start]
        if self.num_frames == self.universe:
            self._copy_range(start, stop, out)
        else:
            self._gather(self._universe_rows(np.arange(start, stop, dtype=np.int64)), out)
        return torch.from_numpy(out)

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Sample rows `rows` (sorted) as a new float32 tensor."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        self._gather(self._universe_rows(np.asarray(rows, dtype=np.int64)), out)
        return torch.from_numpy(out)

    def _copy_range(self, start: int, stop: int, out: np.ndarray) -> None:
        segment = int(np.searchsorted(self._bounds, start, side="right")) - 1
        position = start
        while position < stop:
            end = min(stop, int(self._bounds[segment + 1]))
            if end > position:
                first = int(self._starts[segment]) + position - int(self._bounds[segment])
                array = self._array(int(self._sources[segment]))
                np.copyto(
                    out[position - start : end - start], array[first : first + end - position]
                )
            position = end
            segment += 1

    def _gather(self, universe_rows: np.ndarray, out: np.ndarray) -> None:
        segments = np.searchsorted(self._bounds, universe_rows, side="right") - 1
        cuts = np.flatnonzero(np.diff(segments)) + 1
        for begin, end in zip(
            np.concatenate([[0], cuts]), np.concatenate([cuts, [len(segments)]]), strict=True
        ):
            if begin == end:
                continue
            segment = int(segments[begin])
            local = universe_rows[begin:end] - self._bounds[segment] + self._starts[segment]
            out[begin:end] = self._array(int(self._sources[segment]))[local]


def utterance_lengths(store: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """Frames of each utterance `keys` (from the store's index when it has one)."""
    length = getattr(store, "length", None)
    counts = [int(length(key)) if callable(length) else len(store[key]) for key in keys]
    return np.asarray(counts, dtype=np.int64)


def _segments_of(
    store: Mapping[str, np.ndarray], keys: Sequence[str], lengths: np.ndarray | None = None
) -> tuple[Callable[[int], np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """How to read the utterances `keys`: merged shard ranges for our store and fairseq dumps,
    else one segment per utterance (per-file directories, plain mappings; `lengths` spares
    reading each utterance once more)."""
    segments = getattr(store, "segments", None)
    if callable(segments):
        return store.array, segments(keys)  # type: ignore[attr-defined]
    lengths = utterance_lengths(store, keys) if lengths is None else lengths

    def array(index: int) -> np.ndarray:
        return np.asarray(store[keys[index]])

    count = len(keys)
    return array, (
        np.arange(count, dtype=np.int64),
        np.zeros(count, dtype=np.int64),
        np.asarray(lengths, dtype=np.int64),
    )


def _first_frames(store: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray | None:
    """The features of the first utterance of `keys` with frames (its dim and dtype are the
    store's), or None when none has any."""
    first = next((key for key in keys if len(store[key])), None)
    if first is None:
        return None
    sample = np.asarray(store[first])
    if sample.ndim != 2:
        raise DataError(f"{first}: expected (frames, dim) features, got shape {sample.shape}")
    return sample


def utterance_frames(
    store: Mapping[str, Any],
    keys: Sequence[str],
    lengths: np.ndarray | None = None,
    block_rows: int | None = None,
) -> StoreFrames:
    """Every frame of the utterances `keys`, end to end in their order (`lengths`: theirs, when
    known), read block by block: what transcription streams through the k-means."""
    array, segments = _segments_of(store, keys, lengths)
    sample = _first_frames(store, keys)
    return StoreFrames(
        array,
        segments,
        dim=0 if sample is None else sample.shape[1],
        dtype=np.dtype(np.float32) if sample is None else sample.dtype,
        utterances=len(keys),
        block_rows=block_rows,
    )


def sample_frames(
    store: Mapping[str, Any],
    fraction: float = 1.0,
    seed: int = 0,
    max_frames: int | None = None,
    fileids: Sequence[str] | None = None,
    block_rows: int | None = None,
) -> StoreFrames:
    """The frames of a seeded `fraction` of the utterances (drawn without replacement); with
    `max_frames`, that many evenly spaced frames among them (every N/M-th, from a seeded start)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    keys = list(fileids if fileids is not None else store)
    if not keys:
        raise DataError("cannot fit k-means on an empty feature store")
    generator = torch.Generator().manual_seed(seed)
    count = max(1, round(fraction * len(keys)))
    picked = sorted(torch.randperm(len(keys), generator=generator)[:count].tolist())
    chosen = [keys[i] for i in picked]
    array, segments = _segments_of(store, chosen)
    universe = int(segments[2].sum())
    sample = _first_frames(store, chosen)
    if sample is None:
        raise DataError(f"the {count} utterances drawn from the feature store have no frames")
    num_frames, offset = universe, 0
    if max_frames is not None and max_frames < universe:
        num_frames = max_frames
        offset = int(torch.randint(universe, (1,), generator=generator))
    return StoreFrames(
        array,
        segments,
        dim=sample.shape[1],
        dtype=sample.dtype,
        num_frames=num_frames,
        offset=offset,
        utterances=count,
        block_rows=block_rows,
    )
