"""Read the centroids of scikit-learn k-means files (fairseq's joblib `.km` models) safely.

fairseq's `learn_kmeans.py` saves a `MiniBatchKMeans` with `joblib.dump`: a pickle in which
each numpy array is a `joblib.numpy_pickle.NumpyArrayWrapper` followed by the raw array bytes.
Unpickling runs whatever the file names, so by default we use a restricted unpickler:
- scikit-learn classes become an inert stand-in that only keeps its state dict,
- joblib's array wrapper becomes a stand-in that reads the array bytes that follow it,
- numpy dtypes, scalars and plainly pickled arrays are rebuilt by numpy itself,
- anything else is refused with UnsafePickleError before it is called.
No code from scikit-learn (or the file) runs, and scikit-learn need not be installed.
`trust=True` calls `joblib.load` instead: arbitrary code, only for files you made.
"""

from __future__ import annotations

import bz2
import io
import lzma
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sslspeech.errors import CheckpointError, DataError, UnsafePickleError


class _Estimator:
    """Inert stand-in for a pickled scikit-learn object: it only records its state."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Stub:
    """Inert stand-in for a value we never use (e.g. a pickled RandomState)."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ArrayWrapper:
    """Stand-in for joblib's NumpyArrayWrapper: on BUILD it reads the array bytes that follow."""

    stream: io.BytesIO | None = None  # set per load, see _RestrictedUnpickler

    def __setstate__(self, state: dict[str, Any]) -> None:
        if self.stream is None:
            raise UnsafePickleError("joblib array data outside of a joblib file")
        dtype = state.get("dtype")
        shape = tuple(int(v) for v in state.get("shape", ()))
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise UnsafePickleError(
                f"joblib array of dtype {dtype!r} refused (object arrays unpickle)"
            )
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = self.stream.read(1)
            self.stream.read(int.from_bytes(padding, "little"))
        count = int(np.prod(shape)) if shape else 1
        data = self.stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise DataError("joblib file ends inside an array")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if state.get("order") == "F":
            self.array = array.reshape(shape[::-1]).T
        else:
            self.array = array.reshape(shape)


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ndarray pickle constructor, limited to plain ndarrays."""
    if cls is not np.ndarray:
        raise UnsafePickleError(f"array subclass {cls!r} refused")
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(dtype))


def _scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's scalar pickle constructor (dtype + raw bytes)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg's protocol 0/1 object constructor, limited to our stand-ins."""
    if base is not object or not isinstance(cls, type) or not issubclass(cls, _Estimator | _Stub):
        raise UnsafePickleError(f"copyreg._reconstructor({cls!r}, {base!r}) refused")
    return cls.__new__(cls)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _ArrayWrapper,
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _scalar for m in _NUMPY_MODULES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO, source: Path) -> None:
        super().__init__(stream)
        self.source = source
        self.wrapper = type("_BoundArrayWrapper", (_ArrayWrapper,), {"stream": stream})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            return self.wrapper
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "sklearn" or module.startswith("sklearn."):
            return type(name, (_Estimator,), {"qualname": f"{module}.{name}"})
        if module.startswith("numpy.random"):
            return _Stub
        raise UnsafePickleError(
            f"{self.source}: the pickle asks for {module}.{name}, which is not on the allow-list "
            "for scikit-learn k-means files; nothing was executed. If you made this file "
            "yourself, load it with KMeans.load(path, trust=True) in Python or pass --trust-pickle "
            "on the command line (both run joblib.load)"
        )


def _unwrap(value: Any) -> Any:
    if isinstance(value, _ArrayWrapper):
        return value.array
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    return value


#: joblib-compressed float arrays shrink far less; a file inflating beyond this is a bomb.
_MAX_INFLATION = 64


def _decompressed(raw: bytes, path: Path) -> bytes:
    """joblib's `compress=` formats are whole-stream zlib / gzip / bz2 / xz / lzma files,
    inflated to at most `_MAX_INFLATION` times the file's size."""
    decompressor: Any = None
    if raw[:2] == b"\x1f\x8b":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif raw[:1] == b"\x78":
        decompressor = zlib.decompressobj()
    elif raw[:3] == b"BZh":
        decompressor = bz2.BZ2Decompressor()
    elif raw[:6] == b"\xfd7zXZ\x00" or raw[:1] == b"\x5d":
        decompressor = lzma.LZMADecompressor()
    if decompressor is None:
        return raw
    limit = _MAX_INFLATION * len(raw) + 2**20
    try:
        out: bytes = decompressor.decompress(raw, limit + 1)
    except (OSError, zlib.error, lzma.LZMAError, ValueError) as error:
        raise DataError(f"{path}: cannot decompress k-means file: {error}") from None
    if len(out) > limit:
        raise DataError(
            f"{path}: the compressed k-means file inflates beyond {_MAX_INFLATION}x its "
            f"{len(raw)} bytes; it is corrupt or hostile (refused before inflating it all)"
        )
    return out


def load_sklearn_centroids(path: Path, trust: bool = False) -> tuple[np.ndarray, dict[str, str]]:
    """(cluster_centers_ (k, D), metadata) of a pickled or joblib-dumped scikit-learn k-means."""
    if trust:
        try:
            import joblib
        except ImportError:
            raise CheckpointError("trust=True needs joblib: pip install joblib") from None
        model = joblib.load(path)
        centers = getattr(model, "cluster_centers_", None)
        kind = type(model).__name__
        version = str(getattr(model, "_sklearn_version", ""))
    else:
        stream = io.BytesIO(_decompressed(path.read_bytes(), path))
        try:
            model = _RestrictedUnpickler(stream, path).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise DataError(
                f"{path}: not a scikit-learn k-means pickle/joblib file ({error})"
            ) from None
        if not isinstance(model, _Estimator) or not isinstance(model.state, dict):
            raise DataError(f"{path}: the pickle holds {type(model).__name__}, not an estimator")
        state = _unwrap(model.state)
        centers = state.get("cluster_centers_")
        kind = model.qualname
        version = str(state.get("_sklearn_version", ""))
    if not isinstance(centers, np.ndarray) or centers.ndim != 2:
        raise DataError(f"{path}: {kind} has no fitted cluster_centers_ (k, D) array")
    meta = {"source": "sklearn", "sklearn_class": kind, "sklearn_version": version}
    return np.asarray(centers, dtype=np.float32), meta
