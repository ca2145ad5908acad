"""`train` on an existing run directory: one training at a time (the lock names its holder), a
resume with other hyper-parameters is refused with a diff unless asked, a diverging run stops
without saving its non-finite state, and metrics stay strict JSON without duplicate rows."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.cli import main
from sslspeech.errors import ConfigError
from sslspeech.training.checkpoint import list_checkpoints
from sslspeech.training.config import load_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.objectives import Loss
from sslspeech.training.optim import lr_scale
from sslspeech.training.trainer import TRAIN_LOCK_FILE, Trainer, train
from sslspeech.utils.runlock import lock_held
from tests.training.conftest import CONFIGS, small_run, subprocess_env

TINY = CONFIGS / "tiny_hubert.toml"


def strict_records(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file parsed by a strict JSON reader (NaN / Infinity refused)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{path}: non-JSON constant {name}")

    lines = path.read_text().splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def test_a_second_training_on_a_busy_workdir_is_refused_and_names_the_holder(
    tmp_path: Path, tone_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `train` on one run directory: the second stops at once, naming pid, host and since.
    The first is then killed before its first checkpoint: the rerun keeps no row of it."""
    workdir = tmp_path / "run"
    args = ["train", str(TINY), *small_run(workdir, tone_manifest, "logging.log_every=1")]
    args += ["run.max_steps=100000", "checkpoint.save_every=100000"]
    env = subprocess_env()
    first = subprocess.Popen([sys.executable, "-m", "sslspeech", *args], env=env)
    lock, metrics = workdir / TRAIN_LOCK_FILE, workdir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert first.poll() is None, "the first training ended early"
            assert time.monotonic() < deadline, "the first training wrote no metrics"
            time.sleep(0.05)
        assert lock_held(lock)
        assert main(args) == 1
        err = capsys.readouterr().err
        assert f"another training is running in {workdir}" in err
        assert f"pid {first.pid} on {socket.gethostname()} since" in err
        assert "use another run.workdir" in err
        assert main([*args, "--restart"]) == 1  # nor may --restart delete its files
        assert "another training is running" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not lock_held(lock)
    assert list_checkpoints(workdir / "checkpoints") == []
    assert main([*args, "run.max_steps=2"]) == 0
    assert [r["step"] for r in strict_records(metrics)] == [1, 2]


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory: pytest.TempPathFactory, tone_manifest: Path) -> Path:
    """A tiny HuBERT run of 3 steps (checkpoint at step 3)."""
    workdir = tmp_path_factory.mktemp("three_steps")
    summary = train(load_config(TINY, small_run(workdir, tone_manifest, "run.max_steps=3")))
    assert summary["step"] == 3
    return workdir


def resumed(workdir: Path, manifest: Path, *extra: str, apply: bool = False) -> Trainer:
    config = load_config(TINY, small_run(workdir, manifest, *extra))
    return Trainer(config, resolve_environment("cpu", {}), apply_config_changes=apply)


def test_resuming_with_other_hyper_parameters_is_refused_with_a_diff(
    three_steps: Path, tone_manifest: Path
) -> None:
    """optim.lr and masking changes are listed key: old -> new, with the ways out."""
    with pytest.raises(ConfigError) as error:
        resumed(three_steps, tone_manifest, "optim.lr=1e-5", "masking.mask_prob=0.5")
    message = str(error.value)
    assert "step_3.pt was trained with another config" in message
    assert "optim.lr: 0.002 -> 1e-05" in message
    assert "masking.mask_prob: 0.65 -> 0.5" in message
    assert "model.mask_prob: 0.65 -> 0.5" in message  # the model config follows [masking]
    assert "--restart" in message and "--apply-config-changes" in message


def test_an_architecture_change_is_refused_with_a_diff(
    three_steps: Path, tone_manifest: Path
) -> None:
    """Model fields are compared too: model.ffn_dim, whose tensors would not fit, is named."""
    with pytest.raises(ConfigError, match=r"changed:\n  model\.ffn_dim: 128 -> 256\n"):
        resumed(three_steps, tone_manifest, "model.ffn_dim=256")


def test_length_paths_cadence_and_logging_may_change_on_resume(
    three_steps: Path, tone_manifest: Path
) -> None:
    trainer = resumed(
        three_steps,
        tone_manifest,
        "run.max_steps=50",
        "logging.log_every=1",
        "checkpoint.save_every=7",
        f"data.val_manifest={tone_manifest}",
        "run.validate_every=2",
    )
    assert trainer.state.step == 3


def test_apply_config_changes_gives_the_optimizer_the_new_schedule_from_the_step(
    three_steps: Path, tone_manifest: Path
) -> None:
    """The loaded optimizer state would keep lr 2e-3; applied, the rate is 1e-5 * scale(3)."""
    extra = ("optim.lr=1e-5", "optim.weight_decay=0.1", "schedule.warmup_steps=10")
    trainer = resumed(three_steps, tone_manifest, *extra, apply=True)
    assert trainer.state.step == 3
    scale = lr_scale(3, trainer.config.schedule, trainer.config.run.max_steps)
    assert scale == pytest.approx(0.3)
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-5 * scale)
        assert group["weight_decay"] == 0.1
    assert trainer.scheduler.base_lrs == [1e-5] * len(trainer.optimizer.param_groups)
    trainer.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5 * 0.4)


def test_a_new_parameter_grouping_is_refused_on_resume_with_the_ways_out(
    three_steps: Path, tone_manifest: Path
) -> None:
    """optim.decay_norms_and_biases changes the optimizer's parameter groups: even with
    --apply-config-changes the resume is refused, naming the key and run.init_from."""
    with pytest.raises(ConfigError) as error:
        resumed(three_steps, tone_manifest, "optim.decay_norms_and_biases=false", apply=True)
    message = str(error.value)
    assert "optim.decay_norms_and_biases" in message and "cannot change on resume" in message
    assert "--restart" in message and "run.init_from=" in message and "step_3.pt" in message


def test_an_infinite_learning_rate_stops_the_run_without_saving_it(
    tmp_path: Path, tone_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """optim.lr=inf: exit 1 with a clear error, no checkpoint at all, strict-JSON metrics."""
    workdir = tmp_path / "run"
    args = ["train", str(TINY), *small_run(workdir, tone_manifest, "optim.lr=inf")]
    args += ["run.max_steps=20", "logging.log_every=1", "checkpoint.save_every=100"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "not finite for 6 steps in a row (optim.max_nonfinite_steps = 5)" in err
    assert "No checkpoint was saved" in err
    assert list_checkpoints(workdir / "checkpoints") == []
    assert not (workdir / "checkpoints" / "last.pt").exists()
    records = strict_records(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["loss"] is None and records[-1]["grad_norm"] is None
    assert main([*args, "checkpoint.save_every=1", "--restart"]) == 1
    assert "the model's parameters are not finite; not saving" in capsys.readouterr().err
    assert list_checkpoints(workdir / "checkpoints") == []


class NonFiniteAt:
    """An objective whose loss is NaN at the given (1-based) steps, else the wrapped one's."""

    def __init__(self, inner: Any, trainer: Trainer, steps: set[int]) -> None:
        self.inner, self.trainer, self.steps = inner, trainer, steps
        self.freeze_step = inner.freeze_step

    def __call__(self, module: Any, batch: dict[str, Any]) -> Loss:
        loss = self.inner(module, batch)
        if self.trainer.state.step + 1 in self.steps:
            return Loss(total=loss.total * math.nan, count=loss.count, stats=loss.stats)
        return loss

    def after_step(self, model: Any, step: int) -> dict[str, float]:
        return dict(self.inner.after_step(model, step))

    def resume(self, model: Any, step: int) -> None:
        self.inner.resume(model, step)


def test_a_few_non_finite_steps_are_skipped_and_the_run_goes_on(
    tmp_path: Path, tone_manifest: Path
) -> None:
    """Two NaN losses in a row (limit 5): no update for them, then training continues."""
    overrides = small_run(tmp_path, tone_manifest, "run.max_steps=5", "logging.log_every=1")
    trainer = Trainer(load_config(TINY, overrides), resolve_environment("cpu", {}))
    trainer.objective = NonFiniteAt(trainer.objective, trainer, {2, 3})
    try:
        assert trainer.fit()["status"] == "completed"
    finally:
        trainer.close()
    updates = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert updates == {3}  # AdamW's own step count: 5 steps, 2 skipped
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    losses = [r["loss"] for r in strict_records(tmp_path / "metrics.jsonl")]
    assert losses[1] is None and losses[2] is None
    assert all(loss is not None and loss > 0 for loss in (losses[0], *losses[3:]))
    assert list_checkpoints(tmp_path / "checkpoints")[-1][0] == 5
