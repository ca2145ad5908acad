"""`sslspeech report RUN_DIR`: report.html with plots, and results.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslspeech.errors import SSLSpeechError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory of `sslspeech pipeline run`")


def run(args: argparse.Namespace) -> int:
    from sslspeech.pipeline.report import write_report
    from sslspeech.pipeline.runner import PLAN_FILE

    if not (args.run_dir / PLAN_FILE).is_file():
        raise SSLSpeechError(f"{args.run_dir} is not a pipeline run directory (no {PLAN_FILE})")
    print(write_report(args.run_dir))
    return 0
