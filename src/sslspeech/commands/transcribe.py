"""`sslspeech transcribe FEATURES KMEANS OUT`: k-means units of every utterance (JSONL or .km);
`sslspeech transcribe --checkpoint SPIDR_OR_DINOSR --layer L AUDIO_MANIFEST OUT`: the codebook
units of that layer (argmax of the student's prediction), no k-means."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sslspeech.commands.features import (
    add_batch_samples_argument,
    add_sharding_arguments,
    job_options,
)
from sslspeech.errors import ConfigError

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech transcribe`."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="FEATURES KMEANS: a feature store (fairseq .npy/.len dump or .pt/.npy dir) and a "
        "k-means model (ours, or a scikit-learn/fairseq joblib); with --checkpoint: "
        "AUDIO_MANIFEST",
    )
    parser.add_argument(
        "out", metavar="OUT", help='units file: JSONL {"fileid", "units"} (or .km with --km)'
    )
    parser.add_argument("--km", action="store_true", help="write fairseq .km lines instead")
    parser.add_argument(
        "--checkpoint", help="SpidR/DinoSR checkpoint: its codebook units, no k-means"
    )
    parser.add_argument(
        "--layer", type=int, help="with --checkpoint: 1-based layer whose codebook to use"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a scikit-learn k-means with joblib.load (runs code from the file; only for "
        "files you made) when the restricted reader refuses it",
    )
    add_batch_samples_argument(parser, "with --checkpoint: ")
    add_sharding_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Transcribe every incomplete shard, then join the parts."""
    from sslspeech.units.assign import transcribe, transcribe_codebooks

    out = Path(args.out)
    jobs = job_options(args, out.with_name(out.name + ".slurm"), "transcribe")
    if args.checkpoint is None:
        if len(args.inputs) != 2 or args.layer is not None:
            raise ConfigError(
                "give FEATURES KMEANS OUT, or --checkpoint SPIDR_OR_DINOSR --layer L "
                "AUDIO_MANIFEST OUT (codebook units)"
            )
        if args.batch_samples is not None:
            raise ConfigError(
                "--batch-samples sizes the model batches of --checkpoint (codebook units); "
                "k-means transcription reads features, not audio"
            )
        features, kmeans = args.inputs
        transcribe(features, kmeans, out, km=args.km, trust=args.trust_pickle, **jobs)
    else:
        if len(args.inputs) != 1 or args.layer is None:
            raise ConfigError("--checkpoint takes --layer L and one AUDIO_MANIFEST before OUT")
        transcribe_codebooks(
            args.inputs[0],
            args.checkpoint,
            args.layer,
            out,
            km=args.km,
            batch_samples=args.batch_samples,
            **jobs,
        )
    log.info("units in %s", out)
    return 0
