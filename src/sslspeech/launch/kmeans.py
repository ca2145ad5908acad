"""Distributed k-means over a feature store, as one job: here (one process, or one rank of a job
that torchrun, our local launcher or submitit started), in N local worker processes over gloo
(NCCL on GPUs), or as one SLURM job of N tasks (submitit). Every process streams its share of
each pass and the sums are all-reduced (`sslspeech.units.kmeans.fit_store`); rank 0 saves.
`sslspeech kmeans` and the pipeline's k-means stages both run through here."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError, SSLSpeechError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KMeansRun:
    """What one k-means job fits (the options of `sslspeech kmeans`), as every process gets it."""

    features: str
    out: str
    k: int = 100
    fraction: float = 0.1
    max_frames: int | None = None
    seed: int = 0
    method: str = "lloyd"
    max_iter: int = 100
    batch_size: int = 10000
    n_init: int = 1
    device: str = "cpu"
    block_rows: int | None = None

    def argv(self) -> list[str]:
        """The `sslspeech kmeans` arguments that give this run (what each worker runs)."""
        options = [
            [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
            for f in fields(self)
            if f.name not in ("features", "out") and getattr(self, f.name) is not None
        ]
        return [self.features, self.out, *(word for option in options for word in option)]

    def worker_command(self) -> list[str]:
        """What each local worker process runs: `sslspeech kmeans` on this run."""
        return [sys.executable, "-m", "sslspeech", "kmeans", *self.argv()]


def fit(settings: KMeansRun, processes: int = 1) -> dict[str, Any]:
    """Fit in `processes` local workers (torchrun's variables each; one: this process), or,
    when this process is already one rank of a job, fit its share with the others; returns
    the summary (see `summary`)."""
    from sslspeech.training.distributed import started_by_torchrun
    from sslspeech.units.kmeans import KMeans

    if processes < 1:
        raise ConfigError(f"k-means processes must be >= 1; got {processes}")
    if processes == 1 or started_by_torchrun():
        return fit_here(settings)
    from sslspeech.launch.local import run_workers

    code = run_workers(settings.worker_command(), processes)
    if code != 0:
        raise SSLSpeechError(
            f"k-means of {settings.features}: a worker of {processes} exited with status {code} "
            "(its error is in the log above); nothing was saved, rerun to fit again"
        )
    return summary(KMeans.load(settings.out), settings.out)


def summary(model: Any, out: str) -> dict[str, Any]:
    """What a fit reports: k, frames, passes, inertia, processes (from the model's metadata)."""
    keys = ("k", "num_points", "iterations", "inertia", "world_size")
    return {**{key: model.metadata.get(key) for key in keys}, "out": out}


def fit_here(settings: KMeansRun) -> dict[str, Any]:
    """Fit as this process (one of the job's when torchrun's variables are set); rank 0 saves."""
    import torch

    from sslspeech.features.store import open_store
    from sslspeech.training.distributed import (
        destroy_process_group,
        init_process_group,
        resolve_environment,
        started_by_torchrun,
    )
    from sslspeech.units.kmeans import fit_store

    distributed = started_by_torchrun()
    environment = resolve_environment(settings.device) if distributed else None
    device = environment.device if environment else torch.device(settings.device)
    if environment:
        init_process_group(environment)
    try:
        model = fit_store(
            open_store(settings.features),
            settings.k,
            fraction=settings.fraction,
            seed=settings.seed,
            max_frames=settings.max_frames,
            block_rows=settings.block_rows,
            method=settings.method,
            max_iter=settings.max_iter,
            batch_size=settings.batch_size,
            n_init=settings.n_init,
            device=device,
        )
    finally:
        destroy_process_group()
    report = summary(model, settings.out)
    if environment is None or environment.is_main:
        model.save(settings.out)
        log.info("k-means %s", json.dumps(report))
    return report


class KMeansJob:
    """The submitted callable: every task of the job fits its share (rank 0 saves)."""

    def __init__(self, settings: KMeansRun) -> None:
        self.settings = settings

    def __call__(self) -> dict[str, Any]:
        from sslspeech.launch.slurm import export_torch_distributed

        export_torch_distributed()
        return fit_here(self.settings)


def job_folder(settings: KMeansRun) -> Path:
    """Where the SLURM job of `settings` keeps its logs and pickles: next to the model."""
    out = Path(settings.out)
    return out.with_name(out.name + ".submitit")


def job_name(settings: KMeansRun) -> str:
    """The SLURM job name."""
    return f"kmeans-{Path(settings.out).stem}"


def submit_kmeans(settings: KMeansRun, options: Any) -> Any:
    """Submit the k-means as one job of `options` (a `SlurmOptions`: N nodes x G tasks);
    returns the submitit job."""
    from sslspeech.launch.slurm import make_executor

    folder = job_folder(settings)
    params = options.parameters(name=job_name(settings))
    job = make_executor(folder, options, **params).submit(KMeansJob(settings))
    log.info("submitted k-means job %s (logs in %s)", job.job_id, folder)
    return job
