"""`sslspeech transcribe FEATURES KMEANS OUT`: k-means units of every utterance (JSONL or .km)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sslspeech.commands.features import add_sharding_arguments, job_options

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech transcribe`."""
    parser.add_argument("features", help="feature store, fairseq .npy/.len dump or .pt/.npy dir")
    parser.add_argument("kmeans", help="k-means model (ours, or a scikit-learn/fairseq joblib)")
    parser.add_argument("out", help='units file: JSONL {"fileid", "units"} (or .km with --km)')
    parser.add_argument("--km", action="store_true", help="write fairseq .km lines instead")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a scikit-learn k-means with joblib.load (runs code from the file; only for "
        "files you made) when the restricted reader refuses it",
    )
    add_sharding_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Transcribe every incomplete shard, then join the parts."""
    from sslspeech.units.assign import transcribe

    out = Path(args.out)
    transcribe(
        args.features,
        args.kmeans,
        out,
        km=args.km,
        trust=args.trust_pickle,
        **job_options(args, out.with_name(out.name + ".slurm"), "transcribe"),
    )
    log.info("units in %s", out)
    return 0
