"""`sslspeech synth OUT_DIR`: a synthetic phone-aligned English corpus from espeak-ng."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech synth`."""
    parser.add_argument(
        "out_dir",
        help="output folder: wav/, manifest.csv, alignments.jsonl, phones.item, meta.json",
    )
    parser.add_argument("--speakers", type=int, default=4, help="voices, 1-24 (default: 4)")
    parser.add_argument(
        "--utterances", type=int, default=20, help="utterances per speaker (default: 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the corpus is a function of it")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: cores)")


def run(args: argparse.Namespace) -> int:
    """Synthesize and write the corpus."""
    import json

    from sslspeech.synth import make_corpus

    out = make_corpus(
        args.out_dir,
        speakers=args.speakers,
        utterances=args.utterances,
        seed=args.seed,
        workers=args.workers,
    )
    meta = json.loads((out / "meta.json").read_text())
    log.info(
        "%s: %d utterances, %.1f s, %d phone tokens in phones.item",
        out,
        meta["num_utterances"],
        meta["total_seconds"],
        meta["num_items"],
    )
    return 0
