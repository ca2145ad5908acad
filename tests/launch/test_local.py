"""Local launcher: 2 processes over gloo train exactly like 1 process with the same global batch
(2 accumulated micro-batches); worker environments; a failing worker stops the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from sslspeech.launch.local import launch_local, worker_environments
from sslspeech.training.checkpoint import load_checkpoint
from sslspeech.training.metrics import read_metrics
from tests.training.conftest import CONFIGS, small_run, subprocess_env

# One utterance per batch (16 batches per epoch): 4 steps of 2 batches stay in the first epoch,
# so both runs see the same global batches.
ONE_PER_BATCH = ("data.max_batch_samples=8000", "run.max_steps=4", "logging.log_every=1")


def _command(workdir: Path, manifest: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sslspeech",
        "train",
        str(CONFIGS / "tiny_hubert.toml"),
        *small_run(workdir, manifest, *ONE_PER_BATCH, *extra),
    ]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path, tone_manifest: Path
) -> None:
    env = subprocess_env()
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_command(one, tone_manifest, "optim.accumulation=2"), env=env, check=True)
    subprocess.run([*_command(two, tone_manifest), "--nproc", "2"], env=env, check=True)
    a = load_checkpoint(one / "checkpoints" / "step_4.pt")
    b = load_checkpoint(two / "checkpoints" / "step_4.pt")
    assert b["world_size"] == 2 and len(b["ranks"]) == 2
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)
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
        ranks = load_checkpoint(tmp_path / "checkpoints" / f"step_{step}.pt")["ranks"]
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
