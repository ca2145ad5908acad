"""`sslspeech check MANIFEST`: decode every entry, report the bad ones, exit 1 if any."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech check`."""
    parser.add_argument("manifest", help="CSV, fairseq TSV or JSONL manifest")
    parser.add_argument(
        "--report", default=None, help="JSONL file for the problem entries (default: stdout)"
    )
    parser.add_argument(
        "--sample-rate", type=int, default=16_000, help="expected sample rate (default: 16000)"
    )
    parser.add_argument("--workers", type=int, default=1, help="decoding processes (default: 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every entry decodes cleanly, 1 otherwise."""
    from sslspeech.data.check import check_manifest, write_report

    problems = check_manifest(
        args.manifest, sample_rate=args.sample_rate, workers=args.workers, quiet=args.quiet
    )
    count = write_report(problems, args.report)
    if count:
        log.error(
            "%s: %d problem entries%s",
            args.manifest,
            count,
            f", listed in {args.report}" if args.report else "",
        )
        return 1
    log.info("%s: every entry decodes cleanly", args.manifest)
    return 0
