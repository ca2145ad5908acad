"""`sslspeech train CONFIG [key=value ...]`: pretrain HuBERT, DinoSR or SpidR here, in N local
processes (`--nproc`), under torchrun, or as a SLURM job (`--slurm`). Rerunning the same
command on an existing run directory resumes from its last checkpoint."""

from __future__ import annotations

import argparse
import json
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
        "--apply-config-changes",
        action="store_true",
        help="resume even though hyper-parameters differ from the checkpoint's: the new values "
        "apply from its step (a new learning-rate schedule, other masks or batches)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and the job; run nothing"
    )
    add_slurm_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sslspeech.errors import ConfigError
    from sslspeech.training.config import check_paths, load_config
    from sslspeech.training.distributed import resolve_environment

    overrides = list(args.overrides)
    for flag, key in OVERRIDE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    check_paths(config)
    worker = resolve_environment("cpu").source == "torchrun"
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
    _prepare_workdir(config, args)
    if args.slurm:
        from sslspeech.launch.slurm import submit_training

        options = slurm_job_options(args)
        job = submit_training(config, options, apply_config_changes=args.apply_config_changes)
        print(json.dumps({"job_id": str(job.job_id), "workdir": str(workdir)}))
        return 0
    if args.nproc > 1:
        from sslspeech.launch.local import launch_local, worker_command

        command = worker_command(workdir / "config.toml")
        if args.apply_config_changes:
            command.append("--apply-config-changes")
        return launch_local(workdir / "config.toml", args.nproc, command=command)
    return _train_here(config, args.apply_config_changes)


def _prepare_workdir(config: Any, args: argparse.Namespace) -> None:
    """`--restart` clears the run, `--nproc` writes the workers' config.toml: both only while
    no other training holds the run directory."""
    from sslspeech.training.config import save_config
    from sslspeech.training.trainer import clear_run, workdir_lock

    workdir = Path(config.run.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (args.restart or args.nproc > 1):
        return  # a torchrun worker, too: its rank 0 takes the lock in `train`
    with workdir_lock(workdir):
        if args.restart:
            clear_run(workdir)
        if args.nproc > 1:
            save_config(config, workdir / "config.toml")


def _train_here(config: Any, apply_config_changes: bool) -> int:
    from sslspeech.launch.slurm import requeue_current_job
    from sslspeech.training.distributed import resolve_environment
    from sslspeech.training.metrics import json_safe
    from sslspeech.training.trainer import StopFlag, train

    stop = StopFlag().install((signal.SIGUSR1, signal.SIGTERM))
    try:
        summary = train(config, stop=stop, apply_config_changes=apply_config_changes)
    finally:
        stop.restore()
    main_process = resolve_environment("cpu").is_main
    if main_process:
        print(json.dumps(json_safe(summary)))
    if summary["status"] == "preempted" and stop.signum is not None:
        if main_process:
            requeue_current_job()
        return 128 + stop.signum
    return 0


def _dry_run(config: Any, args: argparse.Namespace) -> int:
    from sslspeech.launch.local import worker_command

    print(config.to_toml())
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
