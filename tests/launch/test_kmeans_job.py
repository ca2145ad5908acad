"""`sslspeech kmeans --slurm` through submitit's local executor: one job of 2 tasks over gloo
fits the centroids that one process fits; --dry-run shows the job and submits nothing."""

from __future__ import annotations

import json

import pytest
import torch

from sslspeech.cli import main
from sslspeech.launch.kmeans import KMeansRun, submit_kmeans
from sslspeech.launch.slurm import SlurmOptions
from sslspeech.units import KMeans
from tests.units.test_kmeans_stream import utterances, write_store


@pytest.fixture(autouse=True)
def one_thread_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's tasks inherit this environment: one thread each, as the other tests."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_two_task_job_gives_the_centroids_of_one_process(tmp_path):
    """2 tasks, each streaming half of the blocks, all-reduced: the 1-process centroids (1e-5)."""
    store = write_store(tmp_path / "store", utterances(count=300, dim=4))
    run = KMeansRun(
        features=str(store),
        out=str(tmp_path / "job.safetensors"),
        k=6,
        fraction=1.0,
        block_rows=1000,
    )
    job = submit_kmeans(run, SlurmOptions(cluster="local", gpus_per_node=2, time_minutes=10))
    summaries = job.results()
    assert len(summaries) == 2 and summaries[0]["num_points"] == summaries[1]["num_points"]
    one = tmp_path / "one.safetensors"
    args = ["kmeans", str(store), str(one), "--k", "6", "--fraction", "1", "--block-rows", "1000"]
    assert main(args) == 0
    torch.testing.assert_close(
        KMeans.load(run.out).centroids, KMeans.load(one).centroids, rtol=1e-5, atol=1e-5
    )
    assert KMeans.load(run.out).metadata["world_size"] == "2"


def test_dry_run_shows_the_job(tmp_path, capsys):
    """--slurm --dry-run prints the job's resources and submits nothing."""
    out = tmp_path / "km.safetensors"
    args = ["kmeans", "store", str(out), "--slurm", "-N", "2", "-G", "4", "-A", "acct"]
    assert main([*args, "--dry-run"]) == 0
    job = json.loads(capsys.readouterr().out)
    params = job["parameters"]
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["slurm_account"] == "acct" and not (tmp_path / "km.safetensors.submitit").exists()
