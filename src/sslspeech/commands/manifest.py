"""`sslspeech manifest DATASET OUTPUT`: list the audio of a directory or uncompressed tar."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech manifest`."""
    parser.add_argument("dataset", help="directory (searched recursively) or uncompressed .tar")
    parser.add_argument("output", help="manifest to write (atomically)")
    parser.add_argument(
        "--ext", default=".wav", help="audio extension(s), comma-separated (default: .wav)"
    )
    parser.add_argument(
        "--format",
        choices=("csv", "tsv", "jsonl"),
        default=None,
        help="output format (default: from OUTPUT's extension, else csv); tsv is fairseq's",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes reading headers (default: 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Scan, read sample counts from headers, write the sorted manifest."""
    from sslspeech.data.scan import create_manifest

    report = create_manifest(
        args.dataset,
        args.output,
        ext=args.ext,
        format=args.format,
        workers=args.workers,
        quiet=args.quiet,
    )
    log.info(
        "wrote %s: %d entries (%d unreadable files skipped)",
        args.output,
        report.written,
        report.unreadable,
    )
    return 0
