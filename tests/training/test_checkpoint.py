"""Checkpoint files: atomic writes, last/best links, pruning, RNG round trips, bad files."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sslspeech.errors import CheckpointError
from sslspeech.training import checkpoint as ckpt


def _state(step: int) -> dict[str, object]:
    return {"format": ckpt.FORMAT, "step": step, "model": {"w": torch.full((2,), float(step))}}


def test_rng_states_round_trip_every_generator() -> None:
    state = ckpt.capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.restore_rng(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_rng_state_survives_a_weights_only_save(tmp_path: Path) -> None:
    path = tmp_path / "step_1.pt"
    ckpt.save_checkpoint({"format": ckpt.FORMAT, "rng": ckpt.capture_rng()}, path)
    expected = torch.rand(4)
    ckpt.restore_rng(ckpt.load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_keep_last_and_every_nth_and_best(tmp_path: Path) -> None:
    directory = ckpt.CheckpointDir(tmp_path, save_every=10, keep_last=2, keep_every=30)
    for step in (10, 20):
        directory.save(_state(step), step)
    assert directory.update_best(10, "loss", 1.0)
    assert not directory.update_best(20, "loss", 2.0)
    for step in (30, 40, 50, 60):
        directory.save(_state(step), step)
    kept = [step for step, _ in ckpt.list_checkpoints(tmp_path)]
    assert kept == [10, 30, 50, 60]  # best, every 30th, last two
    assert directory.last.resolve() == directory.path(60).resolve()
    assert ckpt.load_checkpoint(directory.best)["step"] == 10
    assert directory.latest() == directory.path(60)


def test_links_fall_back_to_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("not supported here")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    monkeypatch.setattr("os.link", refuse)
    target = tmp_path / "step_5.pt"
    ckpt.save_checkpoint(_state(5), target)
    ckpt.link(target, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").is_symlink()
    assert ckpt.load_checkpoint(tmp_path / "last.pt")["step"] == 5


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "step_1.pt"
    ckpt.save_checkpoint(_state(1), path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        ckpt.save_checkpoint({"format": ckpt.FORMAT, "bad": lambda: None}, path)  # unpicklable
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.pt"]


def test_foreign_or_truncated_files_are_checkpoint_errors(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an sslspeech training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot read training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
