"""Atomic writes on a full disk: one clear DiskFullError naming the directory, nothing partial."""

from __future__ import annotations

import errno
import pathlib
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslspeech.errors import DiskFullError
from sslspeech.utils import fileio
from sslspeech.utils.fileio import atomic_open, nested_nbytes


class _FullDisk:
    """A writable file whose writes fail with ENOSPC once `room` bytes were written."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data: Any) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()


def _fill_disk(monkeypatch: pytest.MonkeyPatch, room: int = 10) -> None:
    """Writes to temporary files (`*.tmp`) fail with ENOSPC after `room` bytes."""
    real_open = pathlib.Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        return _FullDisk(handle, room) if "w" in mode and self.suffix == ".tmp" else handle

    monkeypatch.setattr(pathlib.Path, "open", open_)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_enospc_in_atomic_open_is_one_clear_error(tmp_path, monkeypatch):
    """ENOSPC from a write says 'no space left on DIR (... MB written ...)' when the size was
    not known ahead, 'needed about N MB' when it was; the old file stays."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    _fill_disk(monkeypatch)
    expected = rf"no space left on {tmp_path} \(0\.0 MB written when it ran out for out\.txt"
    with pytest.raises(DiskFullError, match=expected), atomic_open(target, "w") as handle:
        handle.write("x" * 100)
        handle.flush()
    expected = rf"no space left on {tmp_path} \(needed about 0\.1 MB for out\.txt"
    with (
        pytest.raises(DiskFullError, match=expected),
        fileio.atomic_path(target, 100_000) as tmp,
        tmp.open("w") as handle,
    ):
        handle.write("x" * 100)
    assert target.read_text() == "old" and _leftovers(tmp_path) == ["out.txt"]


def test_torch_save_writer_error_on_a_full_disk(tmp_path, monkeypatch):
    """torch.save's 'unexpected pos' RuntimeError on a full disk becomes DiskFullError with the
    checkpoint's size; the previous checkpoint is untouched and no temporary file remains."""
    from sslspeech.interop import LoadedCheckpoint
    from sslspeech.training.checkpoint import TrainingCheckpoint

    target = tmp_path / "step_1.pt"
    target.write_bytes(b"previous")

    def failing_save(obj: Any, path: Any) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9, 0))
    model = LoadedCheckpoint("hubert", {}, {"w": torch.zeros(3_000_000)}, "test")  # 12 MB
    checkpoint = TrainingCheckpoint(
        model, {}, {}, {}, step=1, epoch=0, world_size=1, ranks=[], config={}
    )
    with pytest.raises(DiskFullError, match=r"needed about 12 MB for step_1\.pt, 0\.0 MB free"):
        checkpoint.save(target)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == ["step_1.pt"]


def test_other_torch_errors_are_not_called_disk_full(tmp_path, monkeypatch):
    """A torch writer error with space left is re-raised as it is, not mislabelled."""

    def failing_save(obj: Any, path: Any) -> None:
        raise RuntimeError("unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", failing_save)
    with (
        pytest.raises(RuntimeError, match="unexpected pos"),
        fileio.atomic_path(tmp_path / "x.pt") as tmp,
    ):
        torch.save({}, tmp)
    assert _leftovers(tmp_path) == []


def test_features_on_a_full_disk_show_one_error(tmp_path, monkeypatch, capsys):
    """`sslspeech features` on a full disk exits 1 with one 'no space left' line and leaves no
    shard (the store writer's two files both go through the shared helper)."""
    from sslspeech.cli import main
    from sslspeech.data.audio import write_wav
    from sslspeech.data.manifest import ManifestEntry, write_manifest

    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(1600, np.float32))
    write_manifest([ManifestEntry("a", str(wav), 1600)], tmp_path / "m.csv")
    out = tmp_path / "feats"
    _fill_disk(monkeypatch, room=1000)
    assert main(["features", str(tmp_path / "m.csv"), str(out), "--quiet"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"no space left on {out}" in errors[0], errors
    assert not any(p.name.startswith(("shard", ".shard")) for p in out.iterdir())


def test_nested_nbytes_counts_arrays_and_tensors():
    """The size hint sums tensors and arrays in nested containers (and nothing else)."""
    state = {"a": torch.zeros(4), "b": [np.zeros(2, np.int16), ("x", 3)], "c": {"d": 1.0}}
    assert nested_nbytes(state) == 16 + 4


class _FullAfterHalf:
    """An append handle that writes half of what it is given, then fails with ENOSPC."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: str) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FullAfterHalf:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()


def test_append_on_a_full_disk_leaves_no_half_line(tmp_path, monkeypatch):
    """metrics.jsonl appends on a full disk: one DiskFullError naming the file, and the file
    cut back to its last full line (the half-written one is gone)."""
    from sslspeech.training.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    metrics = MetricsLog(path)
    metrics.write({"step": 1, "loss": 2.5})
    before = path.read_text()
    real_open = pathlib.Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        return _FullAfterHalf(handle) if mode == "a" else handle

    monkeypatch.setattr(pathlib.Path, "open", open_)
    with pytest.raises(DiskFullError, match=r"appending to metrics\.jsonl"):
        metrics.write({"step": 2, "loss": 2.25, "note": "x" * 100})
    monkeypatch.undo()
    assert path.read_text() == before
