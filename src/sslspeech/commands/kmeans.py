"""`sslspeech kmeans FEATURES OUT`: fit k-means on a sample of a feature store, streamed from
disk: here, in N local processes (`--nproc`, gloo/NCCL), under torchrun, or as one SLURM job of
N tasks (`--slurm`). Each process reads its share of every pass; the sums are all-reduced."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sslspeech.commands.slurm_job import add_slurm_job_arguments, slurm_job_options

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class KMeansRun:
    """What one `sslspeech kmeans` fits: the command's options, as every process gets them."""

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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> KMeansRun:
        """The run of parsed command-line arguments."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def argv(self) -> list[str]:
        """The `sslspeech kmeans` arguments that give this run (what each worker runs)."""
        options = [
            [f"--{f.name.replace('_', '-')}", str(getattr(self, f.name))]
            for f in fields(self)
            if f.name not in ("features", "out") and getattr(self, f.name) is not None
        ]
        return [self.features, self.out, *(word for option in options for word in option)]


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech kmeans`."""
    parser.add_argument("features", help="feature store, fairseq .npy/.len dump or .pt/.npy dir")
    parser.add_argument("out", help="k-means model to write (safetensors)")
    parser.add_argument("--k", type=int, default=100, help="clusters (default: 100)")
    parser.add_argument(
        "--fraction", type=float, default=0.1, help="fraction of utterances used (default: 0.1)"
    )
    parser.add_argument(
        "--max-frames", type=int, default=None, help="cap on the frames used (evenly spaced)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("lloyd", "minibatch"), default="lloyd")
    parser.add_argument("--max-iter", type=int, default=100, help="passes / epochs")
    parser.add_argument("--batch-size", type=int, default=10000, help="mini-batch size")
    parser.add_argument("--n-init", type=int, default=1, help="runs; the best is kept")
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device, e.g. cuda (default: cpu); with several processes: cpu, cuda or auto",
    )
    parser.add_argument(
        "--block-rows",
        type=int,
        default=None,
        help="rows read from the store at a time (default: about 32 MB of float32)",
    )
    parser.add_argument(
        "--nproc", type=int, default=1, help="local processes, each streaming its share"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run; fit and submit nothing"
    )
    add_slurm_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Fit here, in --nproc local workers, or submit a SLURM job."""
    from sslspeech.errors import ConfigError
    from sslspeech.training.distributed import started_by_torchrun

    settings = KMeansRun.from_args(args)
    worker = started_by_torchrun()
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1; got {args.nproc}")
    if worker and (args.nproc > 1 or args.slurm):
        raise ConfigError(
            "this process was started by torchrun (RANK is set): drop --nproc/--slurm"
        )
    if args.slurm:
        return _submit(settings, args)
    command = [sys.executable, "-m", "sslspeech", "kmeans", *settings.argv()]
    if args.dry_run:
        job: dict[str, Any] = {"launcher": "this process", **asdict(settings)}
        if args.nproc > 1:
            job = {"launcher": "local", "processes": args.nproc, "command": command}
        print(json.dumps(job))
        return 0
    if args.nproc > 1:
        from sslspeech.launch.local import run_workers

        return run_workers(command, args.nproc)
    fit_here(settings)
    return 0


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
    summary = {key: model.metadata.get(key) for key in ("k", "num_points", "iterations")}
    summary.update(inertia=model.metadata.get("inertia"), out=settings.out)
    if environment is None or environment.is_main:
        model.save(settings.out)
        log.info("k-means %s", json.dumps(summary))
    return summary


class KMeansJob:
    """The submitted callable: every task of the job fits its share (rank 0 saves)."""

    def __init__(self, settings: KMeansRun) -> None:
        self.settings = settings

    def __call__(self) -> dict[str, Any]:
        from sslspeech.launch.slurm import export_torch_distributed

        export_torch_distributed()
        return fit_here(self.settings)


def submit_kmeans(settings: KMeansRun, options: Any) -> Any:
    """Submit the k-means as one job of `options` (N nodes x G tasks); returns the submitit job."""
    from sslspeech.launch.slurm import make_executor

    folder = _job_folder(settings)
    params = options.parameters(name=f"kmeans-{Path(settings.out).stem}")
    job = make_executor(folder, options, **params).submit(KMeansJob(settings))
    log.info("submitted k-means job %s (logs in %s)", job.job_id, folder)
    return job


def _job_folder(settings: KMeansRun) -> Path:
    out = Path(settings.out)
    return out.with_name(out.name + ".submitit")


def _submit(settings: KMeansRun, args: argparse.Namespace) -> int:
    options = slurm_job_options(args)
    if args.dry_run:
        params = options.parameters(name=f"kmeans-{Path(settings.out).stem}")
        folder = str(_job_folder(settings))
        print(json.dumps({"launcher": "slurm", "folder": folder, "parameters": params}))
        return 0
    job = submit_kmeans(settings, options)
    print(json.dumps({"job_id": str(job.job_id), "out": settings.out}))
    return 0
