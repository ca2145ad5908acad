"""`sslspeech kmeans FEATURES OUT`: fit k-means on a sample of a feature store, streamed from
disk: here, in N local processes (`--nproc`, gloo/NCCL), under torchrun, or as one SLURM job of
N tasks (`--slurm`). Each process reads its share of every pass; the sums are all-reduced. The
job itself is `sslspeech.launch.kmeans` (which the pipeline's k-means stages use too)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from typing import Any

from sslspeech.commands.slurm_job import add_slurm_job_arguments, slurm_job_options
from sslspeech.launch.kmeans import KMeansRun, fit, job_folder, job_name, submit_kmeans


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

    settings = KMeansRun(**{f.name: getattr(args, f.name) for f in fields(KMeansRun)})
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1; got {args.nproc}")
    if started_by_torchrun() and (args.nproc > 1 or args.slurm):
        raise ConfigError(
            "this process was started by torchrun (RANK is set): drop --nproc/--slurm"
        )
    if args.slurm:
        return _submit(settings, args)
    if args.dry_run:
        job: dict[str, Any] = {"launcher": "this process", **asdict(settings)}
        if args.nproc > 1:
            command = settings.worker_command()
            job = {"launcher": "local", "processes": args.nproc, "command": command}
        print(json.dumps(job))
        return 0
    fit(settings, args.nproc)
    return 0


def _submit(settings: KMeansRun, args: argparse.Namespace) -> int:
    options = slurm_job_options(args)
    if args.dry_run:
        params = options.parameters(name=job_name(settings))
        folder = str(job_folder(settings))
        print(json.dumps({"launcher": "slurm", "folder": folder, "parameters": params}))
        return 0
    job = submit_kmeans(settings, options)
    print(json.dumps({"job_id": str(job.job_id), "out": settings.out}))
    return 0
