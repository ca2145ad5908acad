"""The pipeline's k-means stage is one distributed job: 2 local worker processes (gloo) or one
submitit job of 2 tasks (local cluster) fit the centroids of 1 process (1e-5); a finished stage
is not redone, even with another process count; `pipeline status` shows it done with its
processes; `[executor] kmeans_processes` reaches every k-means stage of a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.errors import ConfigError
from sslspeech.pipeline import tasks
from sslspeech.pipeline.executors import LocalExecutor, SlurmExecutor
from sslspeech.pipeline.recipe import StageResources, load_recipe
from sslspeech.pipeline.recipes import build_stages
from sslspeech.pipeline.runner import Runner
from sslspeech.pipeline.stage import Stage
from sslspeech.pipeline.state import read_state
from sslspeech.pipeline.status import format_table, stage_rows
from sslspeech.units import KMeans
from tests.pipeline.test_recipe import BASE, write
from tests.units.test_kmeans_stream import utterances, write_store


@pytest.fixture(autouse=True)
def one_thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers and tasks inherit this environment: one thread each, as the other tests."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 utterances of 4-dim frames in 3 shards (about 9700 frames)."""
    return write_store(tmp_path_factory.mktemp("kmeans") / "store", utterances(count=300, dim=4))


@pytest.fixture(scope="module")
def one_process(store: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """The centroids of the stage in this process."""
    run = tmp_path_factory.mktemp("one")
    Runner(run, [kmeans_stage(store, run, 1)], LocalExecutor()).run()
    return KMeans.load(run / "kmeans.safetensors").centroids


def kmeans_stage(store: Path, run: Path, processes: int) -> Stage:
    return Stage(
        name="mfcc.kmeans",
        function=tasks.fit_kmeans,
        inputs={"features": store},
        outputs={"kmeans": run / "kmeans.safetensors"},
        params={"k": 6, "fraction": 1.0, "seed": 0},
        resources="gpu",
        processes=processes,
    )


def test_two_local_processes_fit_the_centroids_of_one(store, one_process, tmp_path):
    """Local executor, processes = 2: the same centroids from 2 gloo workers; status says done
    with processes=2; reruns (also with 1 process) skip the stage and leave the file alone."""
    run = tmp_path / "run"
    Runner(run, [kmeans_stage(store, run, 2)], LocalExecutor()).run()
    model = KMeans.load(run / "kmeans.safetensors")
    torch.testing.assert_close(model.centroids, one_process, rtol=1e-5, atol=1e-5)
    assert model.metadata["world_size"] == "2"
    (row,) = stage_rows(run)
    assert row.status == "done" and row.results["processes"] == 2
    assert "processes=2" in format_table([row])
    stamp = (run / "kmeans.safetensors").stat().st_mtime_ns
    for processes in (2, 1):
        Runner(run, [kmeans_stage(store, run, processes)], LocalExecutor()).run()
    assert (run / "kmeans.safetensors").stat().st_mtime_ns == stamp
    assert read_state(run, "mfcc.kmeans").attempts == 1


def test_a_slurm_job_of_two_tasks_fits_the_centroids_of_one(store, one_process, tmp_path):
    """Slurm executor (submitit's local cluster), processes = 2: one job of 2 tasks over gloo."""
    run = tmp_path / "run"
    executor = SlurmExecutor(
        folder=run / "slurm", resources={"gpu": StageResources(timeout_min=5)}, cluster="local"
    )
    (state,) = Runner(run, [kmeans_stage(store, run, 2)], executor).run()
    model = KMeans.load(run / "kmeans.safetensors")
    torch.testing.assert_close(model.centroids, one_process, rtol=1e-5, atol=1e-5)
    assert state.results["processes"] == 2 and model.metadata["world_size"] == "2"
    logs = sorted(path.name for path in (run / "slurm" / "mfcc.kmeans").glob("*_log.out"))
    assert len(logs) == 2  # one per task


def test_the_recipe_sets_the_processes_of_every_kmeans_stage(tmp_path):
    """`[executor] kmeans_processes` reaches the k-means stages only; it must be positive."""
    recipe = load_recipe(write(tmp_path, BASE), ["executor.kmeans_processes=4"])
    stages = build_stages(recipe, tmp_path / "run")
    distributed = sorted(stage.name for stage in stages if stage.processes == 4)
    assert distributed == ["it1.kmeans", "mfcc.kmeans"]
    assert all(stage.processes == 1 for stage in stages if stage.name not in distributed)
    with pytest.raises(ConfigError, match=r"executor\.kmeans_processes must be positive"):
        load_recipe(write(tmp_path, BASE), ["executor.kmeans_processes=0"])
