"""Sharded, memory-mappable feature store, and readers for other feature layouts.

Our layout (a directory):
- `store.json`: what was extracted (`format`, `version`, `num_shards`, plus the producer's info).
- `shard-IIIII-of-NNNNN.npy`: every frame of the shard's utterances, (frames, D), float32/float16.
- `shard-IIIII-of-NNNNN.index.tsv`: `fileid<TAB>offset<TAB>length` per utterance, in order.
Both shard files are written to temporary names and renamed, the array first: a shard is
complete exactly when its index exists, so an interrupted writer leaves nothing to clean up.

`open_store(path)` also reads fairseq's `{split}_{rank}_{nshard}.npy` + `.len` dumps (names from
`{split}.tsv` next to them when present) and directories of per-utterance `.pt` / `.npy` files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch

from sslspeech.errors import DataError
from sslspeech.utils.fileio import atomic_open, atomic_path

STORE_META = "store.json"
STORE_FORMAT = "sslspeech.features"
STORE_VERSION = 1
DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
_HEADER_BYTES = 128  # reserved .npy header, rewritten with the final shape when the shard closes
_FAIRSEQ_LEN = re.compile(r"^(?P<split>.+)_(?P<rank>\d+)_(?P<nshard>\d+)\.len$")


def shard_name(shard: int, num_shards: int) -> str:
    """Stem of one shard's files, e.g. `shard-00002-of-00008`."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def shard_paths(
    directory: str | os.PathLike[str], shard: int, num_shards: int
) -> tuple[Path, Path]:
    """(array path, index path) of one shard."""
    stem = Path(directory) / shard_name(shard, num_shards)
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".index.tsv")


def shard_complete(directory: str | os.PathLike[str], shard: int, num_shards: int) -> bool:
    """Whether the shard was fully written (its index exists)."""
    return shard_paths(directory, shard, num_shards)[1].is_file()


def write_store_meta(
    directory: str | os.PathLike[str], meta: Mapping[str, Any], check_only: bool = False
) -> dict[str, Any]:
    """Write `store.json`, or check that the existing one describes the same extraction.

    Shards of different extractions must never mix, so a mismatch is an error. With
    `check_only`, only the given keys are compared and nothing is written.
    """
    full = {"format": STORE_FORMAT, "version": STORE_VERSION, **meta}
    if "num_shards" not in full:
        raise ValueError("store metadata needs 'num_shards'")
    path = Path(directory) / STORE_META
    if path.is_file():
        existing = json.loads(path.read_text())
        wanted = json.loads(json.dumps(full))
        keys = set(wanted) if check_only else set(existing) | set(wanted)
        changed = sorted(k for k in keys if existing.get(k) != wanted.get(k))
        if changed:
            raise DataError(
                f"{path} describes another extraction (differs in {', '.join(changed)}); "
                "write to a new directory or delete this one"
            )
        return existing
    if check_only:
        return full
    with atomic_open(path, "w") as handle:
        json.dump(full, handle, indent=1, sort_keys=True)
    return full


def _npy_header(dtype: np.dtype, rows: int, dim: int) -> bytes:
    text = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    preamble = b"\x93NUMPY\x01\x00"
    room = _HEADER_BYTES - len(preamble) - 2
    if len(text) + 1 > room:
        raise DataError(f"shard too large for the reserved .npy header: shape ({rows}, {dim})")
    body = text.ljust(room - 1).encode("latin1") + b"\n"
    return preamble + len(body).to_bytes(2, "little") + body


class StoreWriter:
    """Stream utterance features into one shard: `with StoreWriter(dir, i, n) as w: w.add(id, x)`.

    Memory stays flat: each array is appended to the shard file as it comes. If the block
    raises, no shard file appears.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        shard: int = 0,
        num_shards: int = 1,
        dtype: str = "float32",
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} is not in [0, {num_shards})")
        self.directory = Path(directory)
        self.shard, self.num_shards = shard, num_shards
        self.dtype: np.dtype = DTYPES[dtype]
        self.dim: int | None = None
        self.rows = 0
        self.count = 0
        self._stack: contextlib.ExitStack | None = None
        self._array: IO[bytes] | None = None
        self._index: IO[str] | None = None

    def __enter__(self) -> StoreWriter:
        array_path, index_path = shard_paths(self.directory, self.shard, self.num_shards)
        with contextlib.ExitStack() as stack:
            # Entered index first so that, on success, the array is renamed before the index.
            index_tmp = stack.enter_context(atomic_path(index_path))
            array_tmp = stack.enter_context(atomic_path(array_path))
            self._index = stack.enter_context(index_tmp.open("w"))
            self._array = stack.enter_context(array_tmp.open("wb"))
            self._array.write(b"\0" * _HEADER_BYTES)
            self._index.write("fileid\toffset\tlength\n")
            self._stack = stack.pop_all()
        return self

    def add(self, fileid: str, features: np.ndarray | torch.Tensor) -> None:
        """Append one utterance's (T, D) features."""
        if self._array is None or self._index is None:
            raise RuntimeError("StoreWriter.add outside its `with` block")
        if not fileid or any(c in fileid for c in "\t\n\r"):
            raise DataError(f"fileid {fileid!r} is empty or holds a tab/newline")
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float32).numpy()
        array = np.ascontiguousarray(features, dtype=self.dtype)
        if array.ndim != 2:
            raise DataError(f"{fileid}: expected (frames, dim) features, got shape {array.shape}")
        if self.dim is None:
            self.dim = array.shape[1]
        elif array.shape[1] != self.dim:
            raise DataError(f"{fileid}: feature dim {array.shape[1]} != {self.dim} of this shard")
        self._array.write(array.tobytes())
        self._index.write(f"{fileid}\t{self.rows}\t{array.shape[0]}\n")
        self.rows += array.shape[0]
        self.count += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if exc_type is None and self._array is not None:
            self._array.seek(0)
            self._array.write(_npy_header(self.dtype, self.rows, self.dim or 0))
        self._array = self._index = None
        stack.__exit__(exc_type, exc, traceback)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # a zero-length array cannot be memory-mapped
        return np.load(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read feature array ({error})") from None


class FeatureStore(Mapping[str, np.ndarray]):
    """Read-only mapping fileid -> (T, D) array over row ranges of memory-mapped arrays."""

    def __init__(
        self,
        arrays: list[Path],
        index: dict[str, tuple[int, int, int]],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._paths = arrays
        self._arrays: list[np.ndarray | None] = [None] * len(arrays)
        self._index = index
        self.meta = meta or {}

    def _array(self, source: int) -> np.ndarray:
        array = self._arrays[source]
        if array is None:
            array = self._arrays[source] = _load_array(self._paths[source])
        return array

    def __getitem__(self, fileid: str) -> np.ndarray:
        source, offset, length = self._index[fileid]
        return self._array(source)[offset : offset + length]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def length(self, fileid: str) -> int:
        """Number of frames of one utterance, without touching the arrays."""
        return self._index[fileid][2]

    def array(self, source: int) -> np.ndarray:
        """The whole memory-mapped array of shard (or fairseq rank) `source`."""
        return self._array(source)

    def segments(self, fileids: Iterable[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(array index, first row, rows) of the utterances `fileids`, in that order; neighbours
        that are contiguous in one array are merged, so a whole shard reads as one range."""
        sources: list[int] = []
        starts: list[int] = []
        lengths: list[int] = []
        for fileid in fileids:
            source, offset, length = self._index[fileid]
            if sources and sources[-1] == source and starts[-1] + lengths[-1] == offset:
                lengths[-1] += length
            else:
                sources.append(source)
                starts.append(offset)
                lengths.append(length)
        return (
            np.asarray(sources, dtype=np.int64),
            np.asarray(starts, dtype=np.int64),
            np.asarray(lengths, dtype=np.int64),
        )

    @property
    def dim(self) -> int:
        """Feature dimension (0 for an empty store)."""
        for source in range(len(self._paths)):
            array = self._array(source)
            if array.shape[0]:
                return int(array.shape[1])
        return 0

    @property
    def frame_rate(self) -> float | None:
        """Frames per second recorded by the producer, if any."""
        rate = self.meta.get("frame_rate")
        return float(rate) if rate is not None else None


class PerFileStore(Mapping[str, np.ndarray]):
    """Read-only mapping over a directory of per-utterance `.pt` / `.npy` arrays (key: stem)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files
        self.meta: dict[str, Any] = {}

    def __getitem__(self, fileid: str) -> np.ndarray:
        path = self._files[fileid]
        if path.suffix == ".npy":
            return _load_array(path)
        value = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: expected a tensor, found {type(value).__name__}")
        return value.detach().float().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def length(self, fileid: str) -> int:
        """Number of frames of one utterance."""
        return int(self[fileid].shape[0])

    @property
    def frame_rate(self) -> float | None:
        """Unknown for per-file directories."""
        return None


def _read_index(path: Path, source: int, index: dict[str, tuple[int, int, int]]) -> int:
    """Add one shard index to `index`; return the number of rows it covers."""
    rows = 0
    with path.open() as handle:
        header = handle.readline().rstrip("\n")
        if header != "fileid\toffset\tlength":
            raise DataError(f"{path}: line 1 should be 'fileid<TAB>offset<TAB>length'")
        for number, line in enumerate(handle, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise DataError(f"{path}:{number}: expected 3 tab-separated fields")
            fileid, offset, length = parts[0], int(parts[1]), int(parts[2])
            if fileid in index:
                raise DataError(f"{path}:{number}: fileid {fileid!r} appears twice in the store")
            index[fileid] = (source, offset, length)
            rows = max(rows, offset + length)
    return rows


def _open_ours(directory: Path) -> FeatureStore:
    meta = json.loads((directory / STORE_META).read_text())
    if meta.get("format") != STORE_FORMAT:
        raise DataError(f"{directory / STORE_META}: not a {STORE_FORMAT} store")
    num_shards = int(meta["num_shards"])
    missing = [i for i in range(num_shards) if not shard_complete(directory, i, num_shards)]
    if missing:
        raise DataError(
            f"{directory}: incomplete store, shards {missing} of {num_shards} are not written; "
            "rerun the extraction with the same arguments (complete shards are skipped)"
        )
    arrays: list[Path] = []
    index: dict[str, tuple[int, int, int]] = {}
    for shard in range(num_shards):
        array_path, index_path = shard_paths(directory, shard, num_shards)
        rows = _read_index(index_path, shard, index)
        arrays.append(array_path)
        shape = _load_array(array_path).shape
        if shape[0] != rows:
            raise DataError(f"{array_path}: {shape[0]} rows but its index covers {rows}")
    return FeatureStore(arrays, index, meta)


def _fairseq_names(directory: Path, split: str) -> list[str] | None:
    tsv = directory / f"{split}.tsv"
    if not tsv.is_file():
        return None
    lines = tsv.read_text().splitlines()[1:]
    return [Path(line.split("\t")[0]).stem for line in lines if line.strip()]


def _shard_range(total: int, nshard: int, rank: int) -> tuple[int, int]:
    """Rows of a fairseq manifest that rank `rank` of `nshard` dumps (fairseq's rounding)."""
    return round(total / nshard * rank), round(total / nshard * (rank + 1))


def _open_fairseq(
    directory: Path, split: str, lens: dict[int, Path], nshard: int, whole: bool = True
) -> FeatureStore:
    missing = sorted(set(range(nshard)) - set(lens))
    if whole and missing:
        raise DataError(f"{directory}: fairseq split {split!r} lacks ranks {missing} of {nshard}")
    names = _fairseq_names(directory, split)
    arrays: list[Path] = []
    index: dict[str, tuple[int, int, int]] = {}
    position = 0
    for source, rank in enumerate(sorted(lens)):
        len_path = lens[rank]
        lengths = [int(v) for v in len_path.read_text().split()]
        array_path = len_path.with_suffix(".npy")
        rows = _load_array(array_path).shape[0]
        if rows != sum(lengths):
            raise DataError(f"{array_path}: {rows} rows but {len_path} sums to {sum(lengths)}")
        keys = [str(position + i) for i in range(len(lengths))]
        if names is not None:
            begin, end = _shard_range(len(names), nshard, rank)
            if end - begin != len(lengths):
                raise DataError(
                    f"{len_path}: {len(lengths)} utterances, but {directory}/{split}.tsv gives "
                    f"rank {rank} of {nshard} {end - begin}; is the .tsv the one that was dumped?"
                )
            keys = names[begin:end]
        offset = 0
        for key, length in zip(keys, lengths, strict=True):
            if key in index:
                raise DataError(f"{directory}/{split}.tsv: name {key!r} appears twice")
            index[key] = (source, offset, length)
            offset += length
        position += len(lengths)
        arrays.append(array_path)
    return FeatureStore(arrays, index, {"format": "fairseq", "split": split, "nshard": nshard})


def _fairseq_splits(directory: Path) -> dict[tuple[str, int], dict[int, Path]]:
    found: dict[tuple[str, int], dict[int, Path]] = {}
    for path in sorted(directory.glob("*.len")):
        match = _FAIRSEQ_LEN.match(path.name)
        if match and path.with_suffix(".npy").is_file():
            key = (match["split"], int(match["nshard"]))
            found.setdefault(key, {})[int(match["rank"])] = path
    return found


def _open_per_file(directory: Path) -> PerFileStore:
    files: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".pt", ".npy") and path.is_file():
            if path.stem in files:
                raise DataError(f"{path}: stem {path.stem!r} also names {files[path.stem]}")
            files[path.stem] = path
    return PerFileStore(files)


def open_store(
    path: str | os.PathLike[str], split: str | None = None
) -> FeatureStore | PerFileStore:
    """Read-only mapping fileid -> (T, D) numpy array over any feature layout we know.

    `path`: our store directory; a fairseq dump directory (pick `split` when it holds several) or
    one of its `.npy`/`.len` files; or a directory of per-utterance `.pt` / `.npy` files.
    """
    path = Path(path)
    if path.is_file() and path.suffix in (".npy", ".len"):
        match = _FAIRSEQ_LEN.match(path.with_suffix(".len").name)
        if not match or not path.with_suffix(".len").is_file():
            raise DataError(
                f"{path}: a single file must be a fairseq {{split}}_{{rank}}_{{n}} shard"
            )
        lens = {int(match["rank"]): path.with_suffix(".len")}
        return _open_fairseq(path.parent, match["split"], lens, int(match["nshard"]), whole=False)
    if not path.is_dir():
        raise DataError(f"{path}: no such feature directory")
    if (path / STORE_META).is_file():
        return _open_ours(path)
    splits = _fairseq_splits(path)
    if split is not None:
        splits = {key: value for key, value in splits.items() if key[0] == split}
    if len(splits) > 1:
        names = ", ".join(f"{s} ({n} shards)" for s, n in splits)
        raise DataError(f"{path} holds several fairseq dumps: {names}; pass split=")
    if splits:
        ((split_name, nshard), lens), *_ = splits.items()
        return _open_fairseq(path, split_name, lens, nshard)
    store = _open_per_file(path)
    if not len(store):
        raise DataError(
            f"{path}: no features found (expected {STORE_META}, fairseq .npy/.len shards, "
            "or per-utterance .pt/.npy files)"
        )
    return store
