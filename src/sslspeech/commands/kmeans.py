"""`sslspeech kmeans FEATURES OUT`: fit k-means on a fraction of the utterances of a store."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sslspeech kmeans`."""
    parser.add_argument("features", help="feature store, fairseq .npy/.len dump or .pt/.npy dir")
    parser.add_argument("out", help="k-means model to write (safetensors)")
    parser.add_argument("--k", type=int, default=100, help="clusters (default: 100)")
    parser.add_argument(
        "--fraction", type=float, default=0.1, help="fraction of utterances used (default: 0.1)"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="cap on the frames used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("lloyd", "minibatch"), default="lloyd")
    parser.add_argument("--max-iter", type=int, default=100, help="iterations / epochs")
    parser.add_argument("--batch-size", type=int, default=10000, help="mini-batch size")
    parser.add_argument("--n-init", type=int, default=1, help="runs; the best is kept")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")


def run(args: argparse.Namespace) -> int:
    """Sample frames, fit, save."""
    from sslspeech.features.store import open_store
    from sslspeech.units.kmeans import fit_store

    store = open_store(args.features)
    model = fit_store(
        store,
        args.k,
        fraction=args.fraction,
        seed=args.seed,
        max_frames=args.max_frames,
        method=args.method,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        n_init=args.n_init,
        device=args.device,
    )
    model.save(args.out)
    log.info(
        "k-means k=%d on %s frames: inertia %s -> %s",
        model.k,
        model.metadata.get("num_points"),
        model.metadata.get("inertia"),
        args.out,
    )
    return 0
