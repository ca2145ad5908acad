"""The SLURM path through submitit's local executor: the submitted job trains (2 tasks over
gloo), a preemption signal saves, requeues and the requeued job finishes the run; --dry-run
shows the job and submits nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from sslspeech.cli import main
from sslspeech.launch.slurm import SlurmOptions, submit_training
from sslspeech.training.checkpoint import TrainingCheckpoint, list_checkpoints
from sslspeech.training.config import load_config
from sslspeech.training.metrics import read_metrics
from tests.training.conftest import CONFIGS, small_run

LOCAL = SlurmOptions(cluster="local", time_minutes=30)


@pytest.fixture(autouse=True)
def one_thread_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's tasks inherit this environment: one thread each, as the other tests."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_submitted_job_trains_on_two_tasks(tmp_path: Path, tone_manifest: Path) -> None:
    config = load_config(
        CONFIGS / "tiny_hubert.toml", small_run(tmp_path, tone_manifest, "run.max_steps=4")
    )
    job = submit_training(config, SlurmOptions(cluster="local", gpus_per_node=2, time_minutes=30))
    summaries = job.results()  # one per task
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    state = TrainingCheckpoint.load(tmp_path / "checkpoints" / "step_4.pt")
    assert state.world_size == 2
    assert (tmp_path / "submitit").is_dir()


def test_preemption_saves_requeues_and_the_requeued_job_finishes(
    tmp_path: Path, tone_manifest: Path
) -> None:
    config = load_config(
        CONFIGS / "tiny_spidr.toml",
        small_run(
            tmp_path,
            tone_manifest,
            "run.max_steps=40",
            "checkpoint.save_every=1000",
            "logging.log_every=1",
        ),
    )
    job = submit_training(config, LOCAL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "metrics.jsonl").exists():
        assert not job.done(), job.stderr()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (task,) = _children(job._process.pid)  # the training task under submitit's controller
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before a time limit / preemption
    summary = job.result()
    assert summary["status"] == "completed" and summary["step"] == 40
    steps = [step for step, _ in list_checkpoints(tmp_path / "checkpoints")]
    assert len(steps) == 2 and 0 < steps[0] < 40 and steps[1] == 40
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 41))
    assert "Caught signal SIGUSR2" in (job.stderr() or "")  # submitit's requeue handler ran


def test_validation_jobs_score_each_checkpoint_apart_from_training(
    tmp_path: Path, tone_manifest: Path
) -> None:
    config = load_config(
        CONFIGS / "tiny_hubert.toml",
        small_run(
            tmp_path,
            tone_manifest,
            "run.max_steps=4",
            "checkpoint.save_every=2",
            "run.validation=job",
            f"data.val_manifest={tone_manifest}",
        ),
    )
    assert submit_training(config, LOCAL).result()["status"] == "completed"
    out = tmp_path / "validation.jsonl"
    deadline = time.monotonic() + 180
    while len(list(read_metrics(out))) < 2:
        assert time.monotonic() < deadline, "validation jobs did not report"
        time.sleep(0.2)
    assert sorted(r["step"] for r in read_metrics(out)) == [2, 4]
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    assert not [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "val"]


def test_dry_run_shows_the_job_and_submits_nothing(
    tmp_path: Path, tone_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        str(CONFIGS / "spidr_base.toml"),
        "--dry-run",
        "--slurm",
        "-A",
        "acct",
        "-N",
        "2",
        "-G",
        "8",
        "-c",
        "10",
        "-t",
        "1200",
        "-C",
        "h100",
        "-q",
        "high",
        "--workdir",
        str(tmp_path / "run"),
        "--manifest",
        str(tone_manifest),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'type = "spidr"' in out and "max_steps = 400000" in out
    job = json.loads(
        "\n".join(line[2:] for line in out.splitlines() if line.startswith("# ")).split("job: ", 1)[
            1
        ]
    )
    params = job["parameters"]
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert params["slurm_account"] == "acct" and params["slurm_constraint"] == "h100"
    assert params["timeout_min"] == 1200 and params["cpus_per_task"] == 10
    assert not (tmp_path / "run").exists()
