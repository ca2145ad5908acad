"""`sslspeech features MANIFEST OUT_DIR`: MFCC or model-layer features into a sharded store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_sharding_arguments(parser: argparse.ArgumentParser) -> None:
    """--shard/--num-shards/--workers/--device/--threads and the SLURM array options."""
    parser.add_argument("--shard", help="only this shard, as i/n (one job of an array)")
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="shards to cut the work into (default: workers)",
    )
    parser.add_argument("--workers", type=int, default=1, help="local processes (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    slurm = parser.add_argument_group("SLURM job array (submitit): one job per shard")
    slurm.add_argument("--slurm", action="store_true", help="run the shards as a SLURM array")
    slurm.add_argument("-p", "--partition", help="partition")
    slurm.add_argument("-A", "--account", help="account")
    slurm.add_argument("-G", "--gpus-per-job", type=int, default=0, help="GPUs per job")
    slurm.add_argument("-c", "--cpus-per-task", type=int, default=None, help="CPU cores per job")
    slurm.add_argument("-t", "--time", type=int, default=60, help="minutes per job (default 60)")
    slurm.add_argument("--array-parallelism", type=int, default=64, help="jobs at once")
    slurm.add_argument("--slurm-cluster", default=None, help="submitit cluster (local: here)")


def sharding(args: argparse.Namespace) -> tuple[int | None, int]:
    """(shard or None, num_shards) from --shard i/n or --num-shards."""
    from sslspeech.errors import ConfigError
    from sslspeech.features.extract import parse_shard

    if args.shard is not None:
        shard, count = parse_shard(args.shard)
        if args.num_shards is not None and args.num_shards != count:
            raise ConfigError(f"--shard {args.shard} disagrees with --num-shards {args.num_shards}")
        return shard, count
    return None, args.num_shards or max(1, args.workers)


def job_options(args: argparse.Namespace, slurm_folder: Path, name: str) -> dict[str, Any]:
    """The sharding/worker/device keyword arguments of `extract_features` and `transcribe`
    from the options of `add_sharding_arguments`; applies --threads to this process."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shard, num_shards = sharding(args)
    return {
        "shard": shard,
        "num_shards": num_shards,
        "workers": args.workers,
        "threads": args.threads or args.cpus_per_task,
        "executor": executor(args, slurm_folder, name),
        "device": args.device,
        "quiet": args.quiet,
    }


def executor(args: argparse.Namespace, folder: Path, name: str) -> Any:
    """A submitit executor for a job array when --slurm is given, else None."""
    if not args.slurm:
        return None
    from sslspeech.launch.slurm import SlurmOptions, make_executor

    options = SlurmOptions(
        account=args.account,
        partition=args.partition,
        cpus_per_task=args.cpus_per_task,
        time_minutes=args.time,
        gpus_per_node=max(1, args.gpus_per_job),
        cluster=args.slurm_cluster,
    )
    params = options.parameters(name=name, gpus=args.gpus_per_job, nodes=1)
    params.update(tasks_per_node=1, slurm_array_parallelism=args.array_parallelism)
    return make_executor(folder, options, **params)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech features`."""
    parser.add_argument("manifest", help="manifest of the utterances (CSV, fairseq TSV, JSONL)")
    parser.add_argument("out_dir", help="feature store directory (complete shards are kept)")
    parser.add_argument("--kind", choices=("mfcc", "model"), default="mfcc", help="default mfcc")
    parser.add_argument("--checkpoint", help="model checkpoint (any format load_model reads)")
    parser.add_argument("--layer", type=int, help="transformer layer, 1-based (model features)")
    parser.add_argument(
        "--after-residual",
        action="store_true",
        help="full layer output (fairseq/HF hidden states) instead of the feed-forward output "
        "before the residual add",
    )
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    add_batch_samples_argument(parser)
    add_sharding_arguments(parser)


def add_batch_samples_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    """--batch-samples: the padded samples per model batch (`features`, `transcribe`)."""
    parser.add_argument(
        "--batch-samples",
        type=int,
        default=None,
        help=f"{note}padded audio samples per model batch, utterances sorted by length "
        "(default: 60 s of audio on CPU, 200 s on a GPU)",
    )


def run(args: argparse.Namespace) -> int:
    """Extract the features of every incomplete shard."""
    from sslspeech.features.extract import extract_features

    out = Path(args.out_dir)
    extract_features(
        args.manifest,
        out,
        kind=args.kind,
        checkpoint=args.checkpoint,
        layer=args.layer,
        before_residual=not args.after_residual,
        dtype=args.dtype,
        batch_samples=args.batch_samples,
        **job_options(args, out / "slurm", "features"),
    )
    log.info("features in %s", out)
    return 0
