"""The SLURM options of a command that runs as one job of N nodes x G tasks (`train`, `kmeans`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_slurm_job_arguments(parser: argparse.ArgumentParser) -> None:
    """--slurm and the job's resources (the spidr CLI's options)."""
    slurm = parser.add_argument_group("SLURM (submitit)")
    slurm.add_argument("--slurm", action="store_true", help="submit a SLURM job instead")
    slurm.add_argument("-A", "--account", help="account")
    slurm.add_argument("-N", "--nodes", type=int, default=1, help="nodes")
    slurm.add_argument("-G", "--gpus-per-node", type=int, default=1, help="GPUs per node")
    slurm.add_argument("-c", "--cpus-per-task", type=int, help="CPU cores per GPU")
    slurm.add_argument("-t", "--time", type=int, help="time limit per job, minutes")
    slurm.add_argument("-C", "--constraint", help="node constraint, e.g. h100")
    slurm.add_argument("-q", "--qos", help="quality of service")
    slurm.add_argument("-p", "--partition", help="partition")
    slurm.add_argument("--mem-per-gpu", help="memory per GPU, e.g. 80G")
    slurm.add_argument(
        "--slurm-cluster", default=None, help="submitit cluster (default: detect; local: here)"
    )


def slurm_job_options(args: argparse.Namespace) -> Any:
    """The `SlurmOptions` of the arguments of `add_slurm_job_arguments`."""
    from sslspeech.launch.slurm import SlurmOptions

    return SlurmOptions(
        account=args.account,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time_minutes=args.time,
        constraint=args.constraint,
        qos=args.qos,
        partition=args.partition,
        mem_per_gpu=args.mem_per_gpu,
        cluster=args.slurm_cluster,
    )
