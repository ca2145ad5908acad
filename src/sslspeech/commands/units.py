"""`sslspeech units merge MANIFEST UNITS OUT`: units as the label column of a manifest;
`sslspeech units quality UNITS ALIGNMENTS`: purities, PNMI, perplexity and bitrate as JSON."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech units` (subcommands: merge, quality)."""
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
    quality = sub.add_parser(
        "quality",
        help="phone/cluster purity, PNMI, unit perplexity, bitrate of units against alignments",
        description="Unit quality against frame-level phone alignments (one JSON object: "
        "phone_purity, cluster_purity, pnmi, unit_perplexity, bitrate, bitrate_dedup, ...).",
    )
    quality.add_argument("units", help='units JSONL {"fileid", "units"} (e.g. from transcribe)')
    quality.add_argument("alignments", help='phone alignments JSONL {"name", "phones"}')
    quality.add_argument(
        "--frequency", type=float, default=50, help="unit frame rate in Hz (default: 50)"
    )
    quality.add_argument(
        "--phone-frequency",
        type=float,
        default=100,
        help="alignment frame rate in Hz (default: 100, 10 ms frames)",
    )
    quality.add_argument(
        "--tolerance",
        type=int,
        default=3,
        help="allowed length difference per utterance, frames at the lower rate (default: 3)",
    )
    quality.add_argument("--output", help="also write the JSON to this file")
    quality.add_argument("--plot", help="write the P(phone | unit) heatmap to this PNG")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    if args.units_command == "quality":
        return _quality(args)
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


def _quality(args: argparse.Namespace) -> int:
    """Measure, print the JSON object, optionally write it and the heatmap."""
    from sslspeech.evaluation.quality import (
        joint_counts,
        plot_phone_unit_heatmap,
        read_alignments,
        read_units,
        unit_quality,
    )
    from sslspeech.utils.fileio import atomic_open

    units, alignments = read_units(args.units), read_alignments(args.alignments)
    rates = {"unit_rate": args.frequency, "phone_rate": args.phone_frequency}
    quality = unit_quality(units, alignments, tolerance=args.tolerance, **rates)
    text = json.dumps({"units": str(args.units), **quality})
    print(text)
    if args.output:
        with atomic_open(args.output, "w") as handle:
            handle.write(text + "\n")
    if args.plot:
        joint = joint_counts(units, alignments, tolerance=args.tolerance, **rates)
        plot_phone_unit_heatmap(joint, args.plot)
        log.info("P(phone | unit) heatmap in %s", args.plot)
    return 0
