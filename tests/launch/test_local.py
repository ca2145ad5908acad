"""Local launcher: 2 processes over gloo train exactly like 1 process with the same global batch
(2 accumulated micro-batches) for HuBERT, SpidR and DinoSR; worker environments; a failing
worker stops the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslspeech.launch.local import launch_local, worker_environments
from sslspeech.training.checkpoint import TrainingCheckpoint
from sslspeech.training.metrics import read_metrics
from tests.training.conftest import CONFIGS, small_run, subprocess_env

# One utterance per batch (16 batches per epoch): 4 steps of 2 batches stay in the first epoch,
# so both runs see the same global batches.
ONE_PER_BATCH = ("data.max_batch_samples=8000", "run.max_steps=4", "logging.log_every=1")


def _train(config: str, workdir: Path, manifest: Path, *extra: str) -> None:
    """`sslspeech train` of a tiny config on the tone corpus with the config's batch settings
    (4 batches of 2-5 utterances per epoch), 8 steps, one checkpoint at the end."""
    command = [
        sys.executable,
        "-m",
        "sslspeech",
        "train",
        str(CONFIGS / config),
        f"run.workdir={workdir}",
        f"data.manifest={manifest}",
        "run.max_steps=8",
        "run.validate_every=0",
        "checkpoint.save_every=8",
        "logging.log_every=1",
        "logging.progress=false",
        *extra,
    ]
    subprocess.run(command, env=subprocess_env(), check=True)


def _state_tensors(checkpoint: TrainingCheckpoint) -> dict[str, torch.Tensor]:
    """Every tensor of the model (parameters and buffers: teacher, codebooks) and of AdamW."""
    tensors = {f"model.{key}": value for key, value in checkpoint.model.state_dict.items()}
    for index, state in checkpoint.optimizer["state"].items():
        tensors.update({f"optimizer.{index}.{k}": v for k, v in state.items()})
    return tensors


@pytest.mark.parametrize("config", ["tiny_hubert.toml", "tiny_spidr.toml", "tiny_dinosr.toml"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path, tone_manifest: Path, config: str
) -> None:
    """`optim.accumulation=2` on one process ends where `--nproc 2` does, on every state tensor
    within 1e-5 (codebook statistics applied once per step from every micro-batch and rank),
    with the same losses logged."""
    one, two = tmp_path / "one", tmp_path / "two"
    _train(config, one, tone_manifest, "optim.accumulation=2")
    _train(config, two, tone_manifest, "--nproc", "2")
    a = TrainingCheckpoint.load(one / "checkpoints" / "step_8.pt")
    b = TrainingCheckpoint.load(two / "checkpoints" / "step_8.pt")
    assert b.world_size == 2 and len(b.ranks) == 2
    ours, theirs = _state_tensors(a), _state_tensors(b)
    assert ours.keys() == theirs.keys()
    for key, tensor in ours.items():
        torch.testing.assert_close(theirs[key], tensor, rtol=1e-5, atol=1e-5, msg=key)
    loss_one = [r["loss"] for r in read_metrics(one / "metrics.jsonl")]
    loss_two = [r["loss"] for r in read_metrics(two / "metrics.jsonl")]
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=1e-5, atol=1e-6)


def test_two_processes_keep_teacher_and_codebooks_identical(
    tmp_path: Path, tone_manifest: Path
) -> None:
    """SpidR's buffers (codebooks) and teacher match across ranks at every checkpoint."""
    env = subprocess_env()
    command = [
        sys.executable,
        "-m",
        "sslspeech",
        "train",
        str(CONFIGS / "tiny_spidr.toml"),
        *small_run(tmp_path, tone_manifest, *ONE_PER_BATCH, "checkpoint.save_every=2"),
        "--nproc",
        "2",
    ]
    subprocess.run(command, env=env, check=True)
    for step in (2, 4):
        ranks = TrainingCheckpoint.load(tmp_path / "checkpoints" / f"step_{step}.pt").ranks
        assert ranks[0]["checksum"] == ranks[1]["checksum"]
        assert ranks[0]["sampler"]["position"] == ranks[1]["sampler"]["position"] == step


def test_worker_environments_follow_torchrun() -> None:
    envs = worker_environments(3, 29500, base={"PATH": "/bin"})
    assert [e["RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["WORLD_SIZE"] for e in envs} == {"3"} and {e["MASTER_PORT"] for e in envs} == {
        "29500"
    }
    assert all(e["LOCAL_RANK"] == e["RANK"] and e["PATH"] == "/bin" for e in envs)


def test_a_failing_worker_stops_the_others(tmp_path: Path) -> None:
    script = "import os, time\nif os.environ['RANK'] == '1': raise SystemExit(3)\ntime.sleep(60)\n"
    status = launch_local(tmp_path / "unused.toml", 2, command=[sys.executable, "-c", script])
    assert status == 3
