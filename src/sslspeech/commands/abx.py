"""`sslspeech abx ITEM FEATURES ...`: ABX error rate (fastabx `zerospeech_abx`), one JSON line.

With `--checkpoint C --audio DIR --layer L|all` instead of FEATURES, the layer features of every
file of the item file are computed in memory and one JSON line is printed per layer. With
`--distance onehot|kl_symmetric`, FEATURES are units (a units JSONL, or a store of ids, one-hot
rows or posteriorgrams), and a SpidR/DinoSR --checkpoint is scored on its codebook units
(`--layer all`: every codebook layer).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError
from sslspeech.evaluation.abx import DISTANCES


def _optional_int(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("item", type=Path, help="ZeroSpeech item file")
    parser.add_argument(
        "features",
        nargs="?",
        type=Path,
        help="feature store, fairseq dump or directory of per-file .pt/.npy (T, D) arrays; "
        'for discrete distances also a units JSONL {"fileid", "units"}',
    )
    parser.add_argument(
        "--distance",
        choices=DISTANCES,
        default="angular",
        help="frame distance: angular (features, default), onehot (unit ids -> one-hot -> "
        "angular), kl_symmetric (posteriorgrams: (KL(p||q) + KL(q||p)) / 2)",
    )
    parser.add_argument(
        "--frequency",
        help="feature frame rate in Hz (required with FEATURES; default: the model's rate)",
    )
    parser.add_argument("--speaker", choices=["within", "across"], default="within")
    parser.add_argument("--context", choices=["within", "any"], default="within")
    parser.add_argument(
        "--max-size-group",
        type=_optional_int,
        default=10,
        metavar="N|none",
        help="at most N tokens of each of A, B, X per cell (default 10; none: all)",
    )
    parser.add_argument(
        "--max-x-across",
        type=_optional_int,
        default=5,
        metavar="N|none",
        help="across speaker: at most N X speakers per (A, B) group (default 5; none: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="subsampling seed (default 0)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    model = parser.add_argument_group("layers of a model (instead of FEATURES)")
    model.add_argument("--checkpoint", help="any checkpoint `sslspeech.models.load_model` reads")
    model.add_argument("--audio", type=Path, help="directory of <fileid>.wav (or flac/ogg/mp3)")
    model.add_argument("--layer", default="all", help="1-based layer, comma list, or 'all'")
    model.add_argument(
        "--before-residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="feed-forward output before the residual add (default) or the full layer output",
    )


def _layers(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--layer takes a 1-based layer, a comma list or 'all'; got {text!r}"
        ) from None


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "speaker": args.speaker,
        "context": args.context,
        "max_size_group": args.max_size_group,
        "max_x_across": args.max_x_across if args.speaker == "across" else None,
        "seed": args.seed,
        "distance": args.distance,
    }


def _line(result: Any, elapsed: float, **extra: Any) -> str:
    record = {
        "score": result.score,
        **extra,
        "frequency": result.frequency,
        "n_cells": result.n_cells,
        "n_triplets": result.n_triplets,
        "seconds": round(elapsed, 3),
    }
    return json.dumps(record)


def run(args: argparse.Namespace) -> int:
    from sslspeech.evaluation.abx import abx_result

    settings = _settings(args)
    if args.checkpoint is not None:
        return _run_model(args, settings)
    if args.features is None:
        raise ConfigError("give FEATURES, or --checkpoint and --audio to score a model's layers")
    if args.frequency is None:
        raise ConfigError("--frequency HZ is required with FEATURES (the frame rate, e.g. 50)")
    start = time.perf_counter()
    result = abx_result(args.item, args.features, args.frequency, device=args.device, **settings)
    extra = {"item": str(args.item), "features": str(args.features)}
    print(_line(result, time.perf_counter() - start, **extra, **settings))
    return 0


def _run_model(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    from sslspeech.evaluation.codebook_abx import abx_codebook_layers
    from sslspeech.evaluation.layers import abx_layers

    if args.features is not None:
        raise ConfigError("give either FEATURES or --checkpoint, not both")
    if args.audio is None:
        raise ConfigError("--checkpoint needs --audio DIR (the audio of the item file)")
    start = time.perf_counter()
    if args.distance == "angular":
        options = {k: v for k, v in settings.items() if k != "distance"}
        results = abx_layers(
            args.item,
            args.checkpoint,
            args.audio,
            _layers(args.layer),
            frequency=args.frequency,
            before_residual=args.before_residual,
            device=args.device,
            **options,
        )
    else:  # codebook units of a SpidR/DinoSR model
        results = abx_codebook_layers(
            args.item,
            args.checkpoint,
            args.audio,
            _layers(args.layer),
            frequency=args.frequency,
            device=args.device,
            **settings,
        )
    elapsed = time.perf_counter() - start
    for layer, result in results.items():
        extra = {"item": str(args.item), "checkpoint": str(args.checkpoint), "layer": layer}
        print(_line(result, elapsed, **extra, **settings))  # seconds: all layers together
    return 0
