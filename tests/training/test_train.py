"""The loop end to end on CPU: tiny configs learn, checkpoints hold the whole state and load as
models, a rerun resumes (bit-exactly after SIGKILL), SIGUSR1 saves and stops, the sampler
resumes mid-epoch, `sslspeech validate` scores every checkpoint and points best.pt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.cli import main
from sslspeech.training.checkpoint import TrainingCheckpoint, list_checkpoints
from sslspeech.training.config import load_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.metrics import MetricsLog, read_metrics
from sslspeech.training.trainer import Trainer, train
from tests.training.conftest import CONFIGS, single_thread, small_run, subprocess_env

MODELS = ("hubert", "spidr", "dinosr")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, tone_manifest: Path) -> dict[str, Path]:
    """Each tiny config trained for 20 steps (checkpoints every 10, validation at 10 and 20)."""
    runs = {}
    for name in MODELS:
        workdir = tmp_path_factory.mktemp(f"run_{name}")
        overrides = small_run(
            workdir,
            tone_manifest,
            "run.max_steps=20",
            "logging.log_every=5",
            f"data.val_manifest={tone_manifest}",
            "run.validate_every=10",
        )
        with single_thread():
            summary = train(load_config(CONFIGS / f"tiny_{name}.toml", overrides))
        assert summary["status"] == "completed" and summary["step"] == 20
        runs[name] = workdir
    return runs


@pytest.mark.parametrize("name", MODELS)
def test_tiny_configs_train_and_their_loss_decreases(tiny_runs: dict[str, Path], name: str) -> None:
    records = list(read_metrics(tiny_runs[name] / "metrics.jsonl"))
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [5, 10, 15, 20]
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    for key in ("loss", "lr", "grad_norm", "audio_seconds_per_second", "memory_gb", "epoch"):
        assert key in train_records[0]
    if name != "hubert":
        assert {"target_ppl", "pred_ppl", "ema_decay"} <= set(train_records[0])
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [10, 20] and all("val_loss" in r for r in val)
    steps = [step for step, _ in list_checkpoints(tiny_runs[name] / "checkpoints")]
    assert steps == [10, 20]
    assert (tiny_runs[name] / "config.toml").is_file()


def test_checkpoints_hold_the_full_state_and_load_as_models(tiny_runs: dict[str, Path]) -> None:
    from sslspeech import DinoSR, HuBERT, HuBERTPretrain, SpidR

    state = TrainingCheckpoint.load(tiny_runs["spidr"] / "checkpoints" / "step_20.pt")
    assert state.optimizer["state"] and state.scheduler and state.config["model"]["type"] == "spidr"
    assert state.step == 20 and state.world_size == 1
    assert {"python", "numpy", "torch"} <= set(state.ranks[0]["rng"])
    assert any(name.startswith("teacher.") for name in state.model.state_dict)
    assert any(name.startswith("codebooks.") for name in state.model.state_dict)
    for name, cls in (("hubert", HuBERTPretrain), ("spidr", SpidR), ("dinosr", DinoSR)):
        path = tiny_runs[name] / "checkpoints" / "last.pt"
        model = cls.from_pretrained(path)
        saved = TrainingCheckpoint.load(path).model.state_dict
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, saved[key]), key
    encoder = HuBERT.from_pretrained(tiny_runs["hubert"] / "checkpoints" / "step_10.pt")
    assert encoder.num_layers == 2


def test_init_from_starts_a_new_run_from_checkpoint_weights(
    tiny_runs: dict[str, Path], tone_manifest: Path, tmp_path: Path
) -> None:
    source = tiny_runs["hubert"] / "checkpoints" / "step_20.pt"
    overrides = small_run(tmp_path, tone_manifest, f"run.init_from={source}")
    trainer = Trainer(
        load_config(CONFIGS / "tiny_hubert.toml", overrides), resolve_environment("cpu", {})
    )
    saved = TrainingCheckpoint.load(source).model.state_dict
    assert trainer.state.step == 0
    for key, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def test_a_rerun_resumes_and_restart_starts_over(
    tiny_runs: dict[str, Path], tone_manifest: Path
) -> None:
    workdir = tiny_runs["dinosr"]
    args = ["train", str(CONFIGS / "tiny_dinosr.toml"), *small_run(workdir, tone_manifest)]
    before = (workdir / "metrics.jsonl").read_text()
    assert main([*args, "run.max_steps=20"]) == 0  # already done: nothing to do
    assert (workdir / "metrics.jsonl").read_text() == before
    assert main([*args, "run.max_steps=3", "logging.log_every=1", "--restart"]) == 0
    assert [step for step, _ in list_checkpoints(workdir / "checkpoints")] == [3]
    assert [r["step"] for r in read_metrics(workdir / "metrics.jsonl")] == [1, 2, 3]


def _train_command(workdir: Path, manifest: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sslspeech",
        "train",
        str(CONFIGS / "tiny_spidr.toml"),
        *small_run(
            workdir,
            manifest,
            "run.max_steps=20",
            "checkpoint.save_every=5",
            "model.freeze_step=12",
            "logging.log_every=1",
            *extra,
        ),
    ]


def _environment() -> dict[str, str]:
    return subprocess_env()


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before the expected checkpoint"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def test_sigkill_then_rerun_gives_bitwise_the_same_parameters(
    tmp_path: Path, tone_manifest: Path
) -> None:
    """SpidR (teacher EMA, codebooks, freeze step at 12) killed after step 10, rerun to 20."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_command(whole, tone_manifest), env=_environment(), check=True)
    process = subprocess.Popen(_train_command(killed, tone_manifest), env=_environment())
    _wait_for(killed / "checkpoints" / "step_10.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step_20.pt").exists()
    subprocess.run(_train_command(killed, tone_manifest), env=_environment(), check=True)
    a = TrainingCheckpoint.load(whole / "checkpoints" / "step_20.pt")
    b = TrainingCheckpoint.load(killed / "checkpoints" / "step_20.pt")
    assert a.model.state_dict.keys() == b.model.state_dict.keys()
    for key in a.model.state_dict:
        assert torch.equal(a.model.state_dict[key], b.model.state_dict[key]), key
    for key, value in a.optimizer["state"].items():
        assert torch.equal(value["exp_avg"], b.optimizer["state"][key]["exp_avg"])
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl")]
    assert steps == list(range(1, 21))  # lines of the killed run past step 10 were dropped


def test_sigusr1_saves_and_stops_then_the_run_continues(
    tmp_path: Path, tone_manifest: Path
) -> None:
    command = _train_command(
        tmp_path, tone_manifest, "run.max_steps=1000", "checkpoint.save_every=500"
    )
    process = subprocess.Popen(command, env=_environment())
    _wait_for(tmp_path / "metrics.jsonl", process)
    process.send_signal(signal.SIGUSR1)
    assert process.wait(timeout=120) == 128 + signal.SIGUSR1
    ((step, path),) = list_checkpoints(tmp_path / "checkpoints")
    assert 0 < step < 500 and (tmp_path / "checkpoints" / "last.pt").resolve() == path.resolve()
    resumed = [*command, f"run.max_steps={step + 2}"]  # the last override wins
    subprocess.run(resumed, env=_environment(), check=True)
    assert TrainingCheckpoint.load(tmp_path / "checkpoints" / "last.pt").step == step + 2


def _batch_key(batch: dict[str, Any]) -> tuple[Any, ...]:
    return (tuple(batch["fileids"]), batch["waveforms"].sum().item(), batch["mask"].tolist())


def test_resumed_sampler_yields_the_same_batches(tmp_path: Path, tone_manifest: Path) -> None:
    config = load_config(CONFIGS / "tiny_hubert.toml", small_run(tmp_path, tone_manifest))
    env = resolve_environment("cpu", {})
    first = Trainer(config, env)
    batches = first.batches()
    per_epoch = len(first.train_data.sampler)
    for _ in range(per_epoch + 2):  # into the second epoch
        next(batches)
    first.save()
    expected = [_batch_key(next(batches)) for _ in range(per_epoch)]
    second = Trainer(config, env)
    assert (second.state.epoch, second.state.position) == (1, 2)
    resumed = second.batches()
    assert [_batch_key(next(resumed)) for _ in range(per_epoch)] == expected


def test_validate_scores_every_checkpoint_and_points_best(
    tiny_runs: dict[str, Path],
    tone_manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoints = tiny_runs["hubert"] / "checkpoints"
    out = tmp_path / "val.jsonl"
    assert (
        main(["validate", str(tone_manifest), str(checkpoints), str(out), "--device", "cpu"]) == 0
    )
    records = list(read_metrics(out))
    assert sorted(r["step"] for r in records) == [10, 20]
    best = min(records, key=lambda r: r["loss"])
    assert TrainingCheckpoint.load(checkpoints / "best.pt").step == best["step"]
    inline = {
        r["step"]: r["loss"]
        for r in read_metrics(tiny_runs["hubert"] / "metrics.jsonl")
        if r["split"] == "val"
    }
    assert all(r["loss"] == pytest.approx(inline[r["step"]], rel=1e-5) for r in records)
    assert json.loads(capsys.readouterr().out.strip())["checkpoints"] == 2
    assert main(["validate", str(tone_manifest), str(checkpoints), str(out)]) == 0
    assert len(list(read_metrics(out))) == 2  # already validated: skipped
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "step_5.pt").write_bytes(b"not a checkpoint")
    assert main(["validate", str(tone_manifest), str(broken), str(tmp_path / "b.jsonl")]) == 1
    assert "step_5.pt" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "none.csv"), str(checkpoints), str(out)]) == 1


def test_missing_sinks_are_a_warning_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    log = MetricsLog(tmp_path / "m.jsonl", wandb_project="p")
    log.write({"split": "train", "step": 1, "loss": 2.0})
    log.close()
    assert "wandb is not installed" in caplog.text
    assert list(read_metrics(tmp_path / "m.jsonl")) == [{"split": "train", "step": 1, "loss": 2.0}]
