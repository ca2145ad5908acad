"""`sslspeech units merge MANIFEST UNITS OUT`: units as the label column of a manifest."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech units` (subcommand: merge)."""
    sub = parser.add_subparsers(dest="units_command", metavar="SUBCOMMAND", required=True)
    merge = sub.add_parser(
        "merge",
        help="add units (joined on fileid) to a manifest as 50 Hz (or 100 Hz) training labels",
        description="Add units to a manifest, joined on fileid (a .km file: line by line). "
        "Each utterance of n samples needs 1 + (n - 400) // 320 units (+-1) at 50 Hz, "
        "1 + (n - 400) // 160 at 100 Hz.",
    )
    merge.add_argument("manifest", help="manifest (CSV, fairseq TSV, JSONL)")
    merge.add_argument("units", help='units JSONL {"fileid", "units"} or fairseq .km')
    merge.add_argument("out", help="manifest with units to write (format from the extension)")
    merge.add_argument(
        "--from-mfcc",
        action="store_true",
        help="the units are at 100 Hz (MFCC): at --label-rate 50 keep every second one",
    )
    merge.add_argument(
        "--label-rate",
        type=float,
        choices=(50.0, 100.0),
        default=50.0,
        help="labels per second written (100: MFCC units kept whole, fairseq's first "
        "iteration; train with model.label_rate=100); default 50",
    )
    merge.add_argument(
        "--tolerance", type=int, default=1, help="allowed frame count difference (default: 1)"
    )


def run(args: argparse.Namespace) -> int:
    """Merge and report."""
    from sslspeech.units.merge import merge

    count = merge(
        args.manifest,
        args.units,
        args.out,
        from_mfcc=args.from_mfcc,
        label_rate=args.label_rate,
        tolerance=args.tolerance,
    )
    log.info("wrote %s: %d utterances with units", args.out, count)
    return 0
