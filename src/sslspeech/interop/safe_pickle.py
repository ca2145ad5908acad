"""Read torch checkpoints (zip and legacy formats) with an allow-list unpickler.

Every global a pickle names goes through `_resolve_global`: tensors and storages, plain
containers and numpy arrays map to our own rebuild functions or to harmless builtins;
fairseq, omegaconf, argparse and typing objects become inert stand-ins that `load` turns into
plain dicts and lists. Any other global raises `UnsafePickleError` before it is called, so a
malicious file runs nothing. There is no fallback to `torch.load(weights_only=False)`.

Memory is bounded too: storages may hold at most `_MAX_EXPANSION` times the file's size, and
what the pickle itself sizes (`bytes(n)`, `range(n)`, numpy shapes) at most `_PICKLE_CEILING`
bytes, so a few-hundred-byte file cannot allocate gigabytes.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import math
import pickle
import re
import struct
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar

import numpy as np
import torch

from sslspeech.errors import CheckpointError, UnsafePickleError

__all__ = ["FairseqDictionary", "load"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_BUILTIN_TYPES = (  # bytes, bytearray and range are sized per load: _sized_by_pickle
    *("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bool"),
    *("slice", "object"),
)
_STORAGE_DTYPES = {
    "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool,
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "ShortStorage": torch.int16,
    "UntypedStorage": torch.uint8,
}
#: Storage bytes a load may read, as a multiple of the file's size (compressed zip records
#: expand; torch.save itself never compresses).
_MAX_EXPANSION = 4
#: Bytes a pickle may size by itself (`bytes(n)`, `bytearray(n)`, `range(n)`, numpy shapes).
_PICKLE_CEILING = 64 * 2**20


class _Budget:
    """Bytes a load may still allocate on the file's say-so; running out is a CheckpointError."""

    def __init__(self, path: Path, limit: int, what: str) -> None:
        self.path, self.left, self.what = path, limit, what

    def take(self, nbytes: int, item: str) -> None:
        """Charge `nbytes` for `item`, or refuse the file before allocating them."""
        if not 0 <= nbytes <= self.left:
            raise CheckpointError(
                f"{self.path}: {item} asks for {nbytes} bytes, but {self.what} leaves only "
                f"{self.left}; the file is corrupt or hostile (nothing was allocated). Re-save "
                "the weights with torch.save or as safetensors."
            )
        self.left -= nbytes


@dataclass(frozen=True)
class _ClassRef:
    """A class a pickle names only as an argument (`torch.Tensor`, `numpy.ndarray`): not
    callable, so `torch.Tensor(2**30)` in a pickle cannot allocate."""

    cls: type

    def __call__(self, *args: Any) -> Any:
        name = f"{self.cls.__module__}.{self.cls.__qualname__}"
        raise TypeError(f"the pickle calls {name} itself; only torch's rebuild functions may")


# --------------------------------------------------------------------------- stand-ins


class _Stub:
    """Inert stand-in for a foreign class: records constructor arguments and pickled state."""

    qualname: ClassVar[str] = ""
    kind: ClassVar[str] = "other"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        obj = object.__new__(cls)
        obj.__dict__["_stub_args"] = args
        obj.__dict__["_stub_state"] = kwargs or None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were recorded by __new__; nothing else happens."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | None):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.__dict__["_stub_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


_STUB_CLASSES: dict[str, type[_Stub]] = {}


def _stub_class(qualname: str, kind: str) -> type[_Stub]:
    """One stand-in class per qualified name (a class reference in a pickle stays one object)."""
    if qualname not in _STUB_CLASSES:
        name = qualname.rsplit(".", 1)[-1] or "Stub"
        _STUB_CLASSES[qualname] = type(name, (_Stub,), {"qualname": qualname, "kind": kind})
    return _STUB_CLASSES[qualname]


@dataclass
class FairseqDictionary:
    """What a pickled `fairseq.data.dictionary.Dictionary` holds, without fairseq."""

    symbols: list[str]
    count: list[int]
    indices: dict[str, int]
    bos_index: int | None = None
    pad_index: int | None = None
    eos_index: int | None = None
    unk_index: int | None = None
    nspecial: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.symbols)


# --------------------------------------------------------------------------- tensors


@dataclass
class _Storage:
    """Bytes of one saved storage, its element type and (legacy views) an element offset."""

    untyped: torch.UntypedStorage
    dtype: torch.dtype
    offset: int = 0


@dataclass(frozen=True)
class _StorageType:
    """What a `torch.FloatStorage`-like global stands for: only its dtype matters."""

    dtype: torch.dtype


def _tensor_on(storage: _Storage, dtype: torch.dtype, offset: int, size: Any, stride: Any) -> Any:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor was rebuilt from {type(storage).__name__}, not a storage")
    tensor = torch.empty((0,), dtype=dtype)
    return tensor.set_(storage.untyped, storage.offset + offset, tuple(size), tuple(stride))


def _with_metadata(tensor: torch.Tensor, metadata: Any, requires_grad: bool) -> torch.Tensor:
    """Apply torch's saved view bits: conj stays a lazy conjugate view, neg is materialized."""
    flags = {key: bool(value) for key, value in (metadata or {}).items()}
    unknown = sorted(key for key, value in flags.items() if value and key not in ("conj", "neg"))
    if unknown:
        raise CheckpointError(f"tensor metadata {unknown} is not supported")
    if flags.get("neg"):
        tensor = -tensor
    if flags.get("conj"):
        tensor = tensor.conj()
    return tensor.requires_grad_(requires_grad)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _tensor_on(storage, storage.dtype, offset, size, stride)


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    tensor = _tensor_on(storage, storage.dtype, offset, size, stride)
    return _with_metadata(tensor, metadata, requires_grad)


def _rebuild_tensor_v3(
    storage: _Storage,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool,
    backward_hooks: Any,
    dtype: torch.dtype,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"tensor dtype {dtype!r} is not a torch.dtype")
    return _with_metadata(_tensor_on(storage, dtype, offset, size, stride), metadata, requires_grad)


def _set_attributes(obj: Any, state: Any) -> Any:
    if isinstance(state, tuple) and len(state) == 2:
        state = {**(state[0] or {}), **(state[1] or {})}
    for key, value in (state or {}).items():
        if not isinstance(key, str) or key.startswith("__"):
            raise CheckpointError(f"refusing to set the attribute {key!r} on a loaded tensor")
        setattr(obj, key, value)
    return obj


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"a parameter was rebuilt from {type(data).__name__}, not a tensor")
    return torch.nn.Parameter(data, requires_grad=requires_grad)


def _rebuild_parameter_with_state(
    data: Any, requires_grad: bool, backward_hooks: Any, state: Any
) -> torch.nn.Parameter:
    return _set_attributes(_rebuild_parameter(data, requires_grad, backward_hooks), state)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if isinstance(new_type, _ClassRef):
        new_type = new_type.cls
    if func not in _TENSOR_REBUILDERS_SET or new_type not in (torch.Tensor, torch.nn.Parameter):
        raise CheckpointError(f"cannot rebuild a tensor of type {new_type!r} with {func!r}")
    result = func(*args)
    if type(result) is not new_type:
        result = result.as_subclass(new_type)
    return _set_attributes(result, state)


def _rebuild_from_cpu_copy(data: Any, dtype: Any, device: Any, requires_grad: bool) -> Any:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor) or not isinstance(dtype, torch.dtype):
        raise CheckpointError("a device tensor was saved without tensor data")
    return data.to(dtype).requires_grad_(requires_grad)


_TENSOR_REBUILDERS: dict[str, Callable[..., Any]] = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
    "_rebuild_device_tensor_from_numpy": _rebuild_from_cpu_copy,
    "_rebuild_device_tensor_from_cpu_tensor": _rebuild_from_cpu_copy,
}
_TENSOR_REBUILDERS_SET = set(_TENSOR_REBUILDERS.values())


def _torch_layout(name: str) -> torch.layout:
    value = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(value, torch.layout):
        raise CheckpointError(f"unknown tensor layout {name!r}")
    return value


# --------------------------------------------------------------------------- numpy & builtins


def _sized_by_pickle(budget: _Budget) -> dict[str, Callable[..., Any]]:
    """The globals whose arguments size an allocation, charged to the pickle's budget."""

    def sized(kind: type) -> Callable[..., Any]:
        def build(*args: Any) -> Any:
            if args and isinstance(args[0], int):
                budget.take(args[0], f"{kind.__name__}({args[0]})")
            return kind(*args)

        return build

    def bounded_range(*args: Any) -> range:
        numbers = range(*args)
        length = -((numbers.start - numbers.stop) // numbers.step)  # len() overflows past 2**63
        budget.take(8 * max(length, 0), f"range{args}")  # a pointer per element once listed
        return numbers

    def np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        """An empty array that the pickle's BUILD (ndarray.__setstate__) then fills."""
        if subtype != _ClassRef(np.ndarray):
            raise CheckpointError(f"numpy array subclass {subtype!r} is not supported")
        dims = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
        dtype = np.dtype(typecode)
        budget.take(math.prod(max(int(d), 0) for d in dims) * dtype.itemsize, f"array {dims}")
        return np.ndarray(dims, dtype=dtype)

    table: dict[str, Callable[..., Any]] = {
        "builtins.bytes": sized(bytes),
        "builtins.bytearray": sized(bytearray),
        "builtins.range": bounded_range,
    }
    for package in ("numpy.core", "numpy._core"):
        table[f"{package}.multiarray._reconstruct"] = np_reconstruct
    return table


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype):
        raise CheckpointError(f"numpy scalar with dtype {dtype!r}")
    if dtype.hasobject:
        return data
    if isinstance(data, str):
        data = data.encode("latin1")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(tuple(shape), order=order)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use to store bytes."""
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError(f"bytes stored with the unexpected encoding {encoding!r}")
    return text.encode(encoding)


def _plain_dict_from_defaultdict(default_factory: Any = None, *args: Any) -> dict[Any, Any]:
    """A `collections.defaultdict` becomes a plain dict (its factory is never called)."""
    return dict(*args)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if not (isinstance(cls, type) and isinstance(base, type)):
        raise CheckpointError(f"copyreg._reconstructor called with {cls!r}, {base!r}")
    if base is object:
        return object.__new__(cls)
    obj = base.__new__(cls, state)
    base.__init__(obj, state)  # type: ignore[misc]
    return obj


def _copyreg_newobj(cls: Any, *args: Any) -> Any:
    if not isinstance(cls, type):
        raise CheckpointError(f"copyreg.__newobj__ called with {cls!r}")
    return cls.__new__(cls, *args)


def _fixed_globals() -> dict[str, Any]:
    table: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "collections.Counter": collections.Counter,
        "collections.defaultdict": _plain_dict_from_defaultdict,
        "copyreg._reconstructor": _copyreg_reconstructor,
        "copyreg.__newobj__": _copyreg_newobj,
        "_codecs.encode": _codecs_encode,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": _ClassRef(torch.Tensor),
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.serialization._get_layout": _torch_layout,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.torch_version.TorchVersion": str,
        "numpy.ndarray": _ClassRef(np.ndarray),
        "numpy.dtype": np.dtype,
        "argparse.Namespace": _stub_class("argparse.Namespace", "namespace"),
    }
    for name in _BUILTIN_TYPES:
        table[f"builtins.{name}"] = getattr(builtins, name)
    for name, func in _TENSOR_REBUILDERS.items():
        table[f"torch._utils.{name}"] = func
    for package in ("numpy.core", "numpy._core"):
        table[f"{package}.multiarray.scalar"] = _np_scalar
        table[f"{package}.numeric._frombuffer"] = _np_frombuffer
    for name, dtype in _STORAGE_DTYPES.items():
        table[f"torch.{name}"] = _StorageType(dtype)
        table[f"torch.cuda.{name}"] = _StorageType(dtype)
    table["torch.storage.UntypedStorage"] = _StorageType(torch.uint8)
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            table[f"torch.{name}"] = getattr(torch, name)
    return table


_FIXED_GLOBALS: dict[str, Any] | None = None


def _canonical_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (protocol <= 2 pickles: `__builtin__.long`, `commands.call`) in Python 3."""
    # pickle's own table of renamed modules; the stdlib keeps it for exactly this purpose
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _foreign_stub(module: str, name: str) -> type[_Stub] | None:
    """Stand-ins for fairseq, omegaconf, typing and pathlib names; None for anything else."""
    qualname = f"{module}.{name}"
    root = module.split(".", 1)[0]
    if root == "omegaconf":
        kinds = {"DictConfig": "dictconfig", "ListConfig": "listconfig"}
        kind = kinds.get(name, "node" if name.endswith("Node") else "other")
        return _stub_class(qualname, kind)
    if root == "fairseq":
        return _stub_class(qualname, "dictionary" if name.endswith("Dictionary") else "other")
    if root == "typing" and name.isidentifier():
        return _stub_class(qualname, "marker")
    if root == "pathlib" and name.endswith("Path"):
        return _stub_class(qualname, "path")
    return None


def _resolve_global(path: Path, module: str, name: str, sized: dict[str, Any]) -> Any:
    """The object a pickle's global stands for, or UnsafePickleError if it is not allowed."""
    global _FIXED_GLOBALS
    if _FIXED_GLOBALS is None:
        _FIXED_GLOBALS = _fixed_globals()
    module, name = _canonical_name(str(module), str(name))
    qualname = f"{module}.{name}"
    if qualname in sized:
        return sized[qualname]
    if qualname in _FIXED_GLOBALS:
        return _FIXED_GLOBALS[qualname]
    stub = _foreign_stub(module, name)
    if stub is not None:
        return stub
    raise UnsafePickleError(
        f"{path}: refusing to unpickle the global '{qualname}': it is not on sslspeech's "
        "allow-list (tensors, plain containers, numpy arrays, fairseq/omegaconf/argparse "
        "configs); nothing from the file was executed. If you trust the file, re-save the "
        "weights as a plain state dict (or safetensors) and load that instead."
    )


# --------------------------------------------------------------------------- unpickler


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come from the allow-list and storages from a callback."""

    def __init__(
        self,
        file: IO[bytes],
        path: Path,
        budget: _Budget,
        storage_loader: Callable[[tuple[Any, ...]], _Storage] | None = None,
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._sized = _sized_by_pickle(budget)
        self._storage_loader = storage_loader

    def find_class(self, module: str, name: str) -> Any:
        return _resolve_global(self._path, module, name, self._sized)

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or self._storage_loader is None:
            raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise CheckpointError(
                f"{self._path}: persistent id of kind {kind!r} (a pickled nn.Module?); "
                "only tensors and state dicts can be loaded"
            )
        return self._storage_loader(pid[1:])


def _storage_dtype(path: Path, storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"{path}: storage of unknown type {storage_type!r}")
    return storage_type.dtype


def _read_exactly(handle: IO[bytes], nbytes: int, path: Path, what: str) -> np.ndarray:
    buffer = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(buffer)  # type: ignore[arg-type]
    done = 0
    while done < nbytes:
        got = handle.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise CheckpointError(f"{path}: {what} is truncated ({done} of {nbytes} bytes)")
        done += got
    return buffer


def _untyped(buffer: np.ndarray) -> torch.UntypedStorage:
    return torch.from_numpy(buffer).untyped_storage()


def _budgets(path: Path) -> tuple[_Budget, _Budget]:
    """(storage budget, pickle budget) of one load."""
    size = path.stat().st_size
    storages = _Budget(path, _MAX_EXPANSION * size, f"the bound of {_MAX_EXPANSION}x the file size")
    return storages, _Budget(path, _PICKLE_CEILING, f"the {_PICKLE_CEILING}-byte pickle ceiling")


def _load_zip(path: Path) -> Any:
    archive_size = path.stat().st_size
    storages, pickled = _budgets(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(
                f"{path}: zip file without '<name>/data.pkl'; not a torch.save checkpoint "
                "(TorchScript archives are not supported: load them with torch.jit.load)"
            )
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names:
            order = archive.read(f"{prefix}byteorder").decode("ascii").strip()
            if order != sys.byteorder:
                raise CheckpointError(f"{path}: saved {order}-endian, this machine is not")
        loaded: dict[str, _Storage] = {}

        def load_storage(pid: tuple[Any, ...]) -> _Storage:
            storage_type, key, _location, numel = pid[:4]
            if key not in loaded:
                dtype = _storage_dtype(path, storage_type)
                record = f"{prefix}data/{key}"
                info = archive.getinfo(record)
                nbytes = info.file_size
                if info.compress_type == zipfile.ZIP_STORED and nbytes > archive_size:
                    raise CheckpointError(f"{path}: record {record} claims more than the file")
                if int(numel) * dtype.itemsize > nbytes:
                    raise CheckpointError(f"{path}: record {record} is shorter than its tensor")
                storages.take(nbytes, f"record {record}")
                with archive.open(record) as handle:
                    buffer = _read_exactly(handle, nbytes, path, record)
                loaded[key] = _Storage(_untyped(buffer), dtype)
            return loaded[key]

        storages.take(archive.getinfo(pickles[0]).file_size, f"record {pickles[0]}")
        with archive.open(pickles[0]) as handle:
            return _Unpickler(handle, path, pickled, load_storage).load()


def _load_legacy(path: Path) -> Any:
    if tarfile.is_tarfile(path):
        raise CheckpointError(f"{path}: the tar checkpoint format of torch < 0.4 is not supported")
    storages, pickled = _budgets(path)
    with path.open("rb") as handle:
        magic = _Unpickler(handle, path, pickled).load()
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(
                f"{path}: not a torch checkpoint (neither a zip archive nor the legacy format)"
            )
        _Unpickler(handle, path, pickled).load()  # protocol version
        sys_info = _Unpickler(handle, path, pickled).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise CheckpointError(f"{path}: saved big-endian, this machine is not")
        roots: dict[str, tuple[np.ndarray, _Storage]] = {}
        file_size = path.stat().st_size

        def load_storage(pid: tuple[Any, ...]) -> _Storage:
            storage_type, key, _location, numel, view = (*pid[:4], pid[4] if len(pid) > 4 else None)
            dtype = _storage_dtype(path, storage_type)
            if key not in roots:
                nbytes = int(numel) * dtype.itemsize
                if not 0 <= nbytes <= file_size:
                    raise CheckpointError(f"{path}: storage {key!r} claims more than the file")
                storages.take(nbytes, f"storage {key!r}")
                buffer = np.empty(nbytes, dtype=np.uint8)
                roots[key] = (buffer, _Storage(_untyped(buffer), dtype))
            root = roots[key][1]
            if view is None:
                return root
            return _Storage(root.untyped, dtype, offset=int(view[1]))

        result = _Unpickler(handle, path, pickled, load_storage).load()
        keys = _Unpickler(handle, path, pickled).load()
        for key in keys:
            _fill_legacy_storage(handle, path, key, roots)
    return result


def _fill_legacy_storage(
    handle: IO[bytes], path: Path, key: str, roots: dict[str, tuple[np.ndarray, _Storage]]
) -> None:
    if key not in roots:
        raise CheckpointError(f"{path}: data for storage {key!r} that no tensor uses")
    buffer, storage = roots[key]
    header = handle.read(8)
    if len(header) != 8:
        raise CheckpointError(f"{path}: storage {key!r} is truncated")
    (numel,) = struct.unpack("<q", header)
    if numel * storage.dtype.itemsize != buffer.nbytes:
        raise CheckpointError(f"{path}: storage {key!r} holds {numel} elements, expected other")
    buffer[:] = _read_exactly(handle, buffer.nbytes, path, f"storage {key!r}")


# --------------------------------------------------------------------------- plain containers

_SCALARS = (
    str,
    bytes,
    int,
    float,
    bool,
    complex,
    type(None),
    torch.Tensor,
    torch.dtype,
    torch.device,
    np.ndarray,
    np.generic,
)
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


class _Converter:
    """Replaces stand-ins by plain values, in place where a container holds them."""

    def __init__(self) -> None:
        # id -> (original, converted); holding the original keeps its id from being reused
        self.memo: dict[int, tuple[Any, Any]] = {}

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, _SCALARS):
            return obj
        if id(obj) in self.memo:
            return self.memo[id(obj)][1]
        if isinstance(obj, type) and issubclass(obj, _Stub):
            return obj.qualname
        self.memo[id(obj)] = (obj, obj)
        if isinstance(obj, _Stub):
            converted = self._stub(obj)
            self.memo[id(obj)] = (obj, converted)
            return converted
        return self._container(obj)

    def _container(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            for key, value in list(obj.items()):
                new = self(value)
                if new is not value:
                    obj[key] = new
        elif isinstance(obj, list):
            for index, value in enumerate(obj):
                obj[index] = self(value)
        elif isinstance(obj, tuple | set | frozenset):
            items = [self(value) for value in obj]
            if any(new is not old for new, old in zip(items, obj, strict=True)):
                rebuilt = type(obj)(items) if not hasattr(obj, "_fields") else type(obj)(*items)
                self.memo[id(obj)] = (obj, rebuilt)
                return rebuilt
        return obj

    def _stub(self, stub: _Stub) -> Any:
        state = stub.__dict__.get("_stub_state")
        args = stub.__dict__.get("_stub_args", ())
        kind = type(stub).kind
        if kind == "dictconfig" or kind == "listconfig":
            return self._config(stub, state if isinstance(state, dict) else {})
        if kind == "node":
            return self(state.get("_val")) if isinstance(state, dict) else self(state)
        if kind == "dictionary" and isinstance(state, dict):
            return _dictionary(self(dict(state)))
        if kind == "path":
            return str(PurePosixPath(*[str(a) for a in args]))
        if isinstance(state, dict):
            return self(dict(state))
        if state is not None:
            return self(state)
        if len(args) == 1:
            return self(args[0])
        return self(list(args)) if args else type(stub).qualname

    def _config(self, stub: _Stub, state: dict[str, Any]) -> Any:
        content = state.get("_content")
        if isinstance(content, dict):
            plain: Any = {}
            self.memo[id(stub)] = (stub, plain)
            plain.update({key: self(value) for key, value in content.items()})
        elif isinstance(content, list | tuple):
            plain = []
            self.memo[id(stub)] = (stub, plain)
            plain.extend(self(value) for value in content)
        else:
            return self(content)  # None, "???" (missing) or an interpolation string
        if state.get("_parent") is None:
            _resolve_interpolations(plain, plain, depth=0)
        return plain


def _dictionary(state: dict[str, Any]) -> FairseqDictionary:
    known = {"symbols", "count", "indices", "bos_index", "pad_index", "eos_index", "unk_index"}
    known |= {"nspecial"}
    return FairseqDictionary(
        symbols=list(state.get("symbols", [])),
        count=list(state.get("count", [])),
        indices=dict(state.get("indices", {})),
        **{k: state[k] for k in known - {"symbols", "count", "indices"} if k in state},
        extra={k: v for k, v in state.items() if k not in known},
    )


def _lookup(root: Any, dotted: str) -> tuple[bool, Any]:
    node = root
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _interpolate(text: str, root: Any, depth: int) -> Any:
    """Resolve `${a.b}` against the config root as OmegaConf would; leave the rest untouched."""
    whole = _INTERPOLATION.fullmatch(text)
    if whole:
        found, value = _lookup(root, whole.group(1))
        if not found or depth > 8:
            return text
        return _interpolate(value, root, depth + 1) if isinstance(value, str) else value

    def substitute(match: re.Match[str]) -> str:
        found, value = _lookup(root, match.group(1))
        if not found:
            return match.group(0)
        return str(_interpolate(value, root, depth + 1) if isinstance(value, str) else value)

    return _INTERPOLATION.sub(substitute, text) if depth <= 8 else text


def _resolve_interpolations(node: Any, root: Any, depth: int) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, str) and "${" in value:
            node[key] = _interpolate(value, root, 0)
        elif isinstance(value, dict | list) and depth < 64:
            _resolve_interpolations(value, root, depth + 1)


# --------------------------------------------------------------------------- entry point

_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    RuntimeError,
    struct.error,
    OverflowError,
    zipfile.BadZipFile,
    MemoryError,  # a size field far beyond the file
)


def load(path: str | Path) -> Any:
    """Load a torch.save file (zip or legacy) on the CPU; foreign config objects become plain.

    Raises UnsafePickleError (naming the file and the global) for anything outside the
    allow-list, CheckpointError for a file that is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except _READ_ERRORS as error:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})"
        ) from error
    return _Converter()(raw)
