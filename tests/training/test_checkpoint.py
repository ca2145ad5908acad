"""Checkpoint files: the schema round trip (and version-1 files from before it), atomic writes,
last/best links, pruning, RNG round trips, bad files."""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sslspeech.errors import CheckpointError
from sslspeech.interop import LoadedCheckpoint, load_checkpoint
from sslspeech.models import HuBERTPretrain, SpidR
from sslspeech.training import checkpoint as ckpt

FIXTURES = Path(__file__).parent / "fixtures"


def _state(step: int, **run: object) -> ckpt.TrainingCheckpoint:
    """A checkpoint of a one-tensor "model" at `step` (`run` replaces other fields)."""
    model = LoadedCheckpoint("spidr", {"embed_dim": 2}, {"w": torch.full((2,), float(step))}, "")
    fields: dict[str, object] = {
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": step},
        "scaler": {},
        "step": step,
        "epoch": 0,
        "world_size": 1,
        "ranks": [{"rank": 0}],
        "config": {"run": {"seed": 0}},
        **run,
    }
    return ckpt.TrainingCheckpoint(model=model, **fields)  # type: ignore[arg-type]


def test_the_schema_round_trips_and_its_model_part_is_what_the_native_reader_reads(
    tmp_path: Path,
) -> None:
    """Every field comes back as written; `from_pretrained`'s reader sees the same model."""
    path = tmp_path / "step_3.pt"
    _state(3).save(path)
    again = ckpt.TrainingCheckpoint.load(path)
    assert again.step == 3 and again.scheduler == {"last_epoch": 3} and again.ranks == [{"rank": 0}]
    assert again.model.model_type == "spidr" and again.model.config == {"embed_dim": 2}
    assert torch.equal(again.model.state_dict["w"], torch.full((2,), 3.0))
    read = load_checkpoint(path)
    assert read.model_type == "spidr" and read.config == again.model.config
    assert torch.equal(read.state_dict["w"], again.model.state_dict["w"])


def test_a_missing_field_or_another_version_names_the_file(tmp_path: Path) -> None:
    """A checkpoint without `ranks`, or of version 2, is refused with the path in the message."""
    payload = _state(1).to_payload()
    del payload["ranks"]
    torch.save(payload, tmp_path / "no_ranks.pt")
    with pytest.raises(CheckpointError, match=r"no_ranks\.pt.*missing \['ranks'\]"):
        ckpt.TrainingCheckpoint.load(tmp_path / "no_ranks.pt")
    torch.save({**_state(1).to_payload(), "version": 2}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match=r"v2\.pt: training checkpoint of version 2"):
        ckpt.TrainingCheckpoint.load(tmp_path / "v2.pt")


@pytest.mark.parametrize(("name", "cls"), [("hubert", HuBERTPretrain), ("spidr", SpidR)])
def test_version_1_checkpoints_of_the_previous_trainer_still_load(name: str, cls: type) -> None:
    """Files written by `Trainer.save` before this schema module (fixtures made by
    fixtures/make_v1_checkpoints.py) read with every field and load as models."""
    path = FIXTURES / f"v1_{name}_step_1.pt"
    saved = ckpt.TrainingCheckpoint.load(path)
    assert saved.step == 1 and saved.world_size == 1 and saved.config["model"]["type"]
    assert {"python", "numpy", "torch"} <= set(saved.ranks[0]["rng"])
    model = cls.from_pretrained(path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved.model.state_dict[key]), key


def test_rng_states_round_trip_every_generator() -> None:
    state = ckpt.capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.restore_rng(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_rng_state_survives_a_weights_only_save(tmp_path: Path) -> None:
    path = tmp_path / "step_1.pt"
    _state(1, ranks=[{"rng": ckpt.capture_rng()}]).save(path)
    expected = torch.rand(4)
    ckpt.restore_rng(ckpt.TrainingCheckpoint.load(path).ranks[0]["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_keep_last_and_every_nth_and_best(tmp_path: Path) -> None:
    directory = ckpt.CheckpointDir(tmp_path, save_every=10, keep_last=2, keep_every=30)
    for step in (10, 20):
        directory.save(_state(step))
    assert directory.update_best(10, "loss", 1.0)
    assert not directory.update_best(20, "loss", 2.0)
    for step in (30, 40, 50, 60):
        directory.save(_state(step))
    kept = [step for step, _ in ckpt.list_checkpoints(tmp_path)]
    assert kept == [10, 30, 50, 60]  # best, every 30th, last two
    assert directory.last.resolve() == directory.path(60).resolve()
    assert ckpt.TrainingCheckpoint.load(directory.best).step == 10
    assert directory.latest() == directory.path(60)


def test_links_fall_back_to_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("not supported here")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    monkeypatch.setattr("os.link", refuse)
    target = tmp_path / "step_5.pt"
    _state(5).save(target)
    ckpt.link(target, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").is_symlink()
    assert ckpt.TrainingCheckpoint.load(tmp_path / "last.pt").step == 5


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "step_1.pt"
    _state(1).save(path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        _state(2, config={"bad": lambda: None}).save(path)  # unpicklable
    assert ckpt.TrainingCheckpoint.load(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.pt"]


def test_foreign_or_truncated_files_are_checkpoint_errors(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an sslspeech training checkpoint"):
        ckpt.TrainingCheckpoint.load(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot read training checkpoint"):
        ckpt.TrainingCheckpoint.load(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.TrainingCheckpoint.load(tmp_path / "missing.pt")


def test_a_version_1_checkpoint_resumes_its_run(tmp_path: Path) -> None:
    """The old HuBERT run continues from its step_1.pt on the same tone corpus to step 2."""
    from sslspeech.training.config import resolve_config
    from sslspeech.training.distributed import resolve_environment
    from sslspeech.training.trainer import Trainer
    from tests.training.corpus import make_tone_corpus

    saved = ckpt.TrainingCheckpoint.load(FIXTURES / "v1_hubert_step_1.pt")
    manifest = make_tone_corpus(tmp_path / "tones", num_utterances=4, min_frames=20, max_frames=30)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURES / "v1_hubert_step_1.pt", tmp_path / "run" / "checkpoints" / "step_1.pt")
    overrides = [f"run.workdir={tmp_path / 'run'}", f"data.manifest={manifest}", "run.max_steps=2"]
    trainer = Trainer(resolve_config(saved.config, overrides), resolve_environment("cpu", {}))
    assert trainer.state.step == 1
    for key, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, saved.model.state_dict[key]), key
    assert trainer.fit()["step"] == 2
