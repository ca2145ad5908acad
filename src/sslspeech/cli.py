"""The `sslspeech` command: one program, one subcommand per stage."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

from sslspeech.errors import SSLSpeechError

# name -> (module under sslspeech.commands, one-line help). Each module defines
# `configure(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "manifest": ("manifest", "list the audio of a directory or uncompressed tar (CSV/TSV/JSONL)"),
    "check": ("check", "decode every manifest entry and report bad files (exit 1 if any)"),
    "pipeline": ("pipeline", "run a recipe of stages (run RECIPE) or show a run (status RUN_DIR)"),
    "report": ("report", "write report.html (plots) and results.json for a pipeline run"),
    "demo": ("demo", "two HuBERT iterations on synthetic speech on CPU, then the report"),
    "convert": ("convert", "rewrite a checkpoint (any supported format) as native or HF"),
    "abx": ("abx", "ABX phone discriminability of features or model layers (fastabx-exact)"),
    "train": ("train", "pretrain HuBERT/DinoSR/SpidR: here, --nproc N processes, or --slurm"),
    "validate": ("validate", "validation loss of every checkpoint of a run; updates best.pt"),
    "synth": ("synth", "synthetic phone-aligned speech (espeak-ng): wav, manifest, item file"),
    "features": ("features", "MFCC or model-layer features of a manifest into a sharded store"),
    "kmeans": ("kmeans", "fit k-means (torch, CPU/GPU) on a fraction of a feature store"),
    "transcribe": (
        "transcribe",
        "units of every utterance: k-means of a store, or SpidR/DinoSR codebooks of audio",
    ),
    "units": (
        "units",
        "unit files: merge (units as training labels), quality (purity, PNMI, bitrate)",
    ),
}

log = logging.getLogger("sslspeech")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="sslspeech",
        description="Self-supervised speech: pretrain, extract, cluster, evaluate.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = import_module(f"sslspeech.commands.{module_name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides after an option (`train CONFIG --workdir D a=1`) land in `extra`.
    overrides = getattr(args, "overrides", None)
    if extra and isinstance(overrides, list) and all("=" in e and e[0] != "-" for e in extra):
        args.overrides, extra = [*overrides, *extra], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from sslspeech import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except SSLSpeechError as error:
        print(f"sslspeech {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sslspeech {args.command}: interrupted", file=sys.stderr)
        return 130
