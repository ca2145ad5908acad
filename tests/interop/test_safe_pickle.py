"""The allow-list unpickler: every fixture checkpoint loads, malicious pickles run nothing."""

from __future__ import annotations

import argparse
import builtins
import functools
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslspeech.errors import CheckpointError, SSLSpeechError, UnsafePickleError
from sslspeech.interop import safe_pickle

FORMATS = {
    "zip": {},
    "legacy": {"_use_new_zipfile_serialization": False},
    "zip-protocol4": {"pickle_protocol": 4},
}


def _fixture_checkpoints(fixtures_dir: Path) -> list[Path]:
    found = [
        *fixtures_dir.glob("hubert/*/checkpoint.pt"),
        *fixtures_dir.glob("hubert/*/*.pth"),
        *fixtures_dir.glob("hubert/*/s3prl_converted.pt"),
        *fixtures_dir.glob("spidr/*/checkpoint.pt"),
        *fixtures_dir.glob("spidr/*/*.ckpt"),
    ]
    assert len(found) == 9, f"expected the fixture checkpoints under {fixtures_dir}"
    return sorted(found)


def _assert_same(actual: Any, expected: Any, where: str = "") -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype and actual.stride() == expected.stride(), where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert type(actual) is type(expected) and list(actual) == list(expected), where
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype, where
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), where


def test_every_fixture_checkpoint_loads(fixtures_dir: Path) -> None:
    """Each pickled fixture loads; those torch can read alone give exactly torch's tensors."""
    for path in _fixture_checkpoints(fixtures_dir):
        loaded = safe_pickle.load(path)
        assert isinstance(loaded, dict) and loaded, path
        try:
            reference = torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError:
            continue  # needs fairseq/omegaconf classes: checked by the next test
        _assert_same(loaded, reference, str(path))


@pytest.mark.parametrize("name", ["fairseq_base_like", "fairseq_large_like"])
def test_fairseq_checkpoint_becomes_plain(fixtures_dir: Path, name: str) -> None:
    """DictConfig cfg and the fairseq Dictionary become the plain values fixture.json records."""
    import json

    folder = fixtures_dir / "hubert" / name
    described = json.loads((folder / "fixture.json").read_text())["config"]
    loaded = safe_pickle.load(folder / "checkpoint.pt")
    assert loaded["cfg"]["model"] == described["model"]
    assert loaded["cfg"]["task"] == described["task"]
    assert type(loaded["cfg"]) is dict and type(loaded["cfg"]["model"]) is dict
    (dictionary,) = loaded["task_state"]["dictionaries"]
    assert isinstance(dictionary, safe_pickle.FairseqDictionary)
    assert dictionary.symbols == described["dictionary_symbols"]
    assert len(dictionary.count) == len(dictionary) == len(dictionary.symbols)
    assert all(dictionary.indices[s] == i for i, s in enumerate(dictionary.symbols))
    assert all(isinstance(v, torch.Tensor) for v in loaded["model"].values())


# --------------------------------------------------------------------------- malicious files


class _Reduce:
    """Pickles as a call of `func(*args)`; pickling it runs nothing."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _attacks(marker: Path) -> dict[str, tuple[Any, str]]:
    touch = f"touch {marker}"
    return {
        "os.system": (_Reduce(os.system, touch), f"{os.system.__module__}.system"),
        "exec": (_Reduce(builtins.exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        "eval": (_Reduce(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "subprocess.call": (_Reduce(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "partial": (
            _Reduce(functools.partial(os.system, touch)),
            "functools.partial",
        ),
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("attack", ["os.system", "exec", "eval", "subprocess.call", "partial"])
def test_malicious_checkpoint_is_refused_without_running(
    tmp_path: Path, fmt: str, attack: str
) -> None:
    """A checkpoint whose pickle calls a dangerous global raises, naming file and global."""
    marker = tmp_path / "pwned"
    payload, global_name = _attacks(marker)[attack]
    path = tmp_path / "evil.pt"
    checkpoint = {"model": {"w": torch.ones(3)}, "extra_state": {"x": payload}}
    torch.save(checkpoint, path, **FORMATS[fmt])
    assert not marker.exists()
    with pytest.raises(UnsafePickleError) as raised:
        safe_pickle.load(path)
    message = str(raised.value)
    assert global_name in message and str(path) in message
    assert isinstance(raised.value, SSLSpeechError)
    assert not marker.exists(), "the pickle's payload ran"


def _raw_pickle_global(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 bytes for `module.name(arg)`, written by hand (no real object needed)."""
    encoded = arg.encode()
    return (
        b"\x80\x02c" + f"{module}\n{name}\n".encode()
        + b"X" + len(encoded).to_bytes(4, "little") + encoded
        + b"\x85R."
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "name", "shown"),
    [
        ("os", "system", "os.system"),
        ("__builtin__", "getattr", "builtins.getattr"),
        ("builtins", "__import__", "builtins.__import__"),
        ("posix", "system", "posix.system"),
        ("nt", "system", "nt.system"),
    ],
)
def test_handmade_legacy_file_is_refused(
    tmp_path: Path, module: str, name: str, shown: str
) -> None:
    """A hand-made legacy-format file (magic, version, sys_info, payload) is refused too."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    header = b"".join(
        pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    path.write_bytes(header + _raw_pickle_global(module, name, f"touch {marker}"))
    with pytest.raises(UnsafePickleError, match=f"'{shown}'"):
        safe_pickle.load(path)
    assert not marker.exists()


def test_malicious_global_in_a_bare_pickle_is_refused(tmp_path: Path) -> None:
    """The magic-number read already goes through the allow-list."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_raw_pickle_global("os", "system", f"touch {marker}"))
    with pytest.raises(UnsafePickleError, match=r"'os\.system'"):
        safe_pickle.load(path)
    assert not marker.exists()


def test_torch_module_pickle_is_refused(tmp_path: Path) -> None:
    """A whole nn.Module (not a state dict) names classes outside the allow-list."""
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.linear\.Linear"):
        safe_pickle.load(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    """Garbage, truncated files and missing paths raise CheckpointError naming the path."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello world, not a pickle")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        safe_pickle.load(garbage)
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.ones(100)}, truncated, _use_new_zipfile_serialization=False)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        safe_pickle.load(truncated)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        safe_pickle.load(tmp_path / "missing.pt")


# --------------------------------------------------------------------------- safe content


def _safe_content() -> dict[str, Any]:
    base = torch.arange(12, dtype=torch.float32)
    state = OrderedDict(w=torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    state._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    tagged = torch.ones(2)
    tagged.note = "kept"  # type: ignore[attr-defined]
    return {
        "model": state,
        "tagged": tagged,
        "base": base,
        "view": base[2:8].view(2, 3),
        "transposed": base.view(3, 4).t(),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "conj": torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64).conj(),
        "float8": torch.tensor([0.5, 2.0]).to(torch.float8_e4m3fn),
        "uint16": torch.arange(3).to(torch.uint16),
        "param": torch.nn.Parameter(torch.zeros(2)),
        "size": torch.Size([2, 3]),
        "np_array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "np_fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "np_scalar": np.float64(2.5),
        "np_int": np.int64(7),
        "np_dtype": np.dtype("int16"),
        "np_structured": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        "np_objects": np.array([1, "a", None], dtype=object),
        "np_rng": np.random.RandomState(0).get_state(),
        "misc": {1, 2},
        "frozen": frozenset({"a"}),
        "complex": 1 + 2j,
        "bytes": b"\x00\xff",
        "empty_bytes": b"",
        "args": argparse.Namespace(lr=0.1, layers=[1, 2]),
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_safe_numpy_and_torch_content_loads(tmp_path: Path, fmt: str) -> None:
    """Tensors (views keep sharing storage), numpy arrays, scalars and dtypes load exactly."""
    content = _safe_content()
    path = tmp_path / "ok.pt"
    torch.save(content, path, **FORMATS[fmt])
    loaded = safe_pickle.load(path)
    assert set(loaded) == set(content)
    for key in ("base", "view", "transposed", "bf16", "mask", "uint16", "np_array", "np_fortran"):
        _assert_same(loaded[key], content[key], key)
    _assert_same(loaded["model"], content["model"], "model")
    assert loaded["model"]._metadata == {"": {"version": 1}}
    assert (
        loaded["view"].untyped_storage().data_ptr() == loaded["base"].untyped_storage().data_ptr()
    )
    assert isinstance(loaded["param"], torch.nn.Parameter) and loaded["param"].requires_grad
    assert loaded["size"] == torch.Size([2, 3]) and isinstance(loaded["size"], torch.Size)
    assert loaded["np_scalar"] == 2.5 and loaded["np_scalar"].dtype == np.float64
    assert loaded["np_int"] == 7 and loaded["np_int"].dtype == np.int64
    assert loaded["np_dtype"] == np.dtype("int16")
    assert loaded["np_structured"].dtype == content["np_structured"].dtype
    assert loaded["np_objects"].tolist() == [1, "a", None]
    assert loaded["np_rng"][0] == "MT19937"
    np.testing.assert_array_equal(loaded["np_rng"][1], content["np_rng"][1])
    assert loaded["misc"] == {1, 2} and loaded["frozen"] == frozenset({"a"})
    assert loaded["complex"] == 1 + 2j
    assert loaded["bytes"] == b"\x00\xff" and loaded["empty_bytes"] == b""
    assert loaded["conj"].is_conj() and torch.equal(loaded["conj"], content["conj"])
    assert loaded["float8"].dtype == torch.float8_e4m3fn
    assert torch.equal(loaded["float8"].float(), content["float8"].float())
    assert loaded["tagged"].note == "kept" and torch.equal(loaded["tagged"], torch.ones(2))
    assert loaded["args"] == {"lr": 0.1, "layers": [1, 2]}


def _fake_omegaconf() -> dict[str, types.ModuleType]:
    """Classes that pickle like omegaconf's (module names, __dict__ state), without omegaconf."""
    package = types.ModuleType("omegaconf")
    base = types.ModuleType("omegaconf.base")
    dictconfig = types.ModuleType("omegaconf.dictconfig")
    listconfig = types.ModuleType("omegaconf.listconfig")
    nodes = types.ModuleType("omegaconf.nodes")

    def make(module: types.ModuleType, name: str) -> type:
        cls = type(name, (), {"__module__": module.__name__})
        setattr(module, name, cls)
        return cls

    make(base, "ContainerMetadata")
    make(base, "Metadata")
    make(dictconfig, "DictConfig")
    make(listconfig, "ListConfig")
    make(nodes, "AnyNode")
    make(nodes, "StringNode")
    make(nodes, "IntegerNode")
    return {m.__name__: m for m in (package, base, dictconfig, listconfig, nodes)}


def _node(modules: dict[str, types.ModuleType], kind: str, value: Any, parent: Any) -> Any:
    node = getattr(modules["omegaconf.nodes"], kind)()
    meta = modules["omegaconf.base"].Metadata()
    meta.__dict__.update(ref_type=Any, object_type=None, optional=True, key=None)
    node.__dict__.update(_metadata=meta, _parent=parent, _val=value)
    return node


def test_omegaconf_interpolations_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DictConfig with `${a.b}` values becomes a dict with the interpolations resolved."""
    modules = _fake_omegaconf()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    root = modules["omegaconf.dictconfig"].DictConfig()
    model = modules["omegaconf.dictconfig"].DictConfig()
    layers = modules["omegaconf.listconfig"].ListConfig()
    meta = modules["omegaconf.base"].ContainerMetadata()
    meta.__dict__.update(ref_type=Any, object_type=dict, key_type=Any, element_type=Any)
    layers.__dict__.update(
        _metadata=meta,
        _parent=model,
        _content=[_node(modules, "IntegerNode", i, None) for i in (1, 2)],
    )
    model.__dict__.update(
        _metadata=meta,
        _parent=root,
        _content={
            "label_rate": _node(modules, "AnyNode", "${task.label_rate}", model),
            "name": _node(modules, "StringNode", "hubert_${task.label_rate}hz", model),
            "missing": _node(modules, "AnyNode", "???", model),
            "env": _node(modules, "AnyNode", "${oc.env:HOME}", model),
            "layers": layers,
        },
    )
    task = modules["omegaconf.dictconfig"].DictConfig()
    task.__dict__.update(
        _metadata=meta,
        _parent=root,
        _content={"label_rate": _node(modules, "AnyNode", 50, task)},
    )
    root.__dict__.update(_metadata=meta, _parent=None, _content={"model": model, "task": task})
    path = tmp_path / "cfg.pt"
    torch.save({"cfg": root}, path)
    loaded = safe_pickle.load(path)
    assert loaded["cfg"] == {
        "model": {
            "label_rate": 50,
            "name": "hubert_50hz",
            "missing": "???",
            "env": "${oc.env:HOME}",
            "layers": [1, 2],
        },
        "task": {"label_rate": 50},
    }


def test_storage_larger_than_the_file_is_refused(tmp_path: Path) -> None:
    """A legacy file whose storage claims 10^15 elements fails cleanly, allocating nothing."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if obj == "STORAGE":
                return ("storage", torch.FloatStorage, "0", "cpu", 10**15, None)
            return None

    path = tmp_path / "huge.pt"
    with path.open("wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        Pickler(handle, protocol=2).dump({"w": "STORAGE"})
        pickle.dump(["0"], handle, protocol=2)
    with pytest.raises(CheckpointError, match="claims more than the file"):
        safe_pickle.load(path)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path: Path) -> None:
    """A tensor whose size runs past its 4-element storage is an error, not a read beyond it."""
    marker = object()

    class Rebuild:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return torch._utils._rebuild_tensor_v2, (marker, 0, (1000,), (1,), False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return ("storage", torch.FloatStorage, "0", "cpu", 4, None) if obj is marker else None

    path = tmp_path / "oob.pt"
    with path.open("wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        Pickler(handle, protocol=2).dump({"w": Rebuild()})
        pickle.dump(["0"], handle, protocol=2)
        handle.write((4).to_bytes(8, "little") + bytes(16))
    with pytest.raises(CheckpointError, match=r"oob\.pt"):
        safe_pickle.load(path)
