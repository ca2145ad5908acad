"""`sslspeech train CONFIG [key=value ...]`: pretrain HuBERT, DinoSR or SpidR here, in N local
processes (`--nproc`), under torchrun, or as a SLURM job (`--slurm`). Rerunning the same
command on an existing run directory resumes from its last checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

from sslspeech.commands.slurm_job import add_slurm_job_arguments, slurm_job_options

OVERRIDE_FLAGS = {
    "workdir": "run.workdir",
    "manifest": "data.manifest",
    "val_manifest": "data.val_manifest",
    "max_steps": "run.max_steps",
    "seed": "run.seed",
    "device": "run.device",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training TOML (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-4"
    )
    common = parser.add_argument_group("common overrides")
    common.add_argument("--workdir", help="run directory (run.workdir)")
    common.add_argument("--manifest", help="training manifest (data.manifest)")
    common.add_argument("--val-manifest", help="validation manifest (data.val_manifest)")
    common.add_argument("--max-steps", type=int, help="optimizer steps (run.max_steps)")
    common.add_argument("--seed", type=int, help="random seed (run.seed)")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), help="run.device")
    parser.add_argument("--nproc", type=int, default=1, help="local processes (data parallel)")
    parser.add_argument(
        "--restart", action="store_true", help="delete the run's checkpoints and start over"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and the job; run nothing"
    )
    add_slurm_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sslspeech.errors import ConfigError
    from sslspeech.training.config import check_paths, load_config

    overrides = list(args.overrides)
    for flag, key in OVERRIDE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    check_paths(config)
    worker = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1; got {args.nproc}")
    if worker and (args.nproc > 1 or args.slurm or args.restart):
        raise ConfigError(
            "this process was started by torchrun (RANK is set): drop --nproc, --slurm and "
            "--restart (delete WORKDIR/checkpoints to start over)"
        )
    if args.dry_run:
        return _dry_run(config, args)
    workdir = Path(config.run.workdir)
    if args.restart:
        from sslspeech.training.trainer import clear_run

        clear_run(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.slurm:
        from sslspeech.launch.slurm import submit_training

        job = submit_training(config, slurm_job_options(args))
        print(json.dumps({"job_id": str(job.job_id), "workdir": str(workdir)}))
        return 0
    if args.nproc > 1:
        from sslspeech.launch.local import launch_local
        from sslspeech.training.config import save_config

        save_config(config, workdir / "config.toml")
        return launch_local(workdir / "config.toml", args.nproc)
    return _train_here(config)


def _train_here(config: Any) -> int:
    from sslspeech.launch.slurm import requeue_current_job
    from sslspeech.training.trainer import StopFlag, train

    stop = StopFlag().install((signal.SIGUSR1, signal.SIGTERM))
    try:
        summary = train(config, stop=stop)
    finally:
        stop.restore()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary))
    if summary["status"] == "preempted" and stop.signum is not None:
        if os.environ.get("RANK", "0") == "0":
            requeue_current_job()
        return 128 + stop.signum
    return 0


def _dry_run(config: Any, args: argparse.Namespace) -> int:
    from sslspeech.launch.local import worker_command
    from sslspeech.training.config import dump_toml

    print(dump_toml(config))
    workdir = Path(config.run.workdir)
    job: dict[str, Any]
    if args.slurm:
        from sslspeech.launch.slurm import describe_job

        job = {"launcher": "slurm", **describe_job(config, slurm_job_options(args))}
    elif args.nproc > 1:
        job = {
            "launcher": "local",
            "processes": args.nproc,
            "command": worker_command(workdir / "config.toml"),
        }
    else:
        job = {"launcher": "this process", "device": config.run.device}
    resume = workdir / "checkpoints" / "last.pt"
    job["resume_from"] = None if args.restart or not resume.exists() else str(resume)
    print("# job: " + json.dumps(job, indent=2).replace("\n", "\n# "))
    return 0
