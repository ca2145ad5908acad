"""`sslspeech validate MANIFEST CKPT_DIR OUT.jsonl`: validation loss of every saved checkpoint
(those already in OUT.jsonl are skipped), then `best.pt` points at the best. Exit status 1 when
any checkpoint could not be validated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="validation manifest (with units for HuBERT)")
    parser.add_argument("checkpoint_dir", type=Path, help="a run's checkpoints/ folder")
    parser.add_argument("out", type=Path, help="JSONL of results, one line per checkpoint")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument("--metric", default="loss", help="metric that selects best.pt (lower)")


def run(args: argparse.Namespace) -> int:
    import torch

    from sslspeech.errors import DataError
    from sslspeech.training.validation import validate

    if not args.manifest.is_file():
        raise DataError(f"manifest {args.manifest} does not exist")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    records = validate(
        args.manifest, args.checkpoint_dir, args.out, device=device, metric=args.metric
    )
    best = min(records, key=lambda record: record.get(args.metric, float("inf")))
    print(json.dumps({"checkpoints": len(records), "best": best}))
    return 0
