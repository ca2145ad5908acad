"""Host-device synchronizations per training micro-batch (forward, backward) of the tiny
configs, counted with `tests.training.syncs.SyncCounter` on the tone corpus; on CUDA
(`--device cuda`) also the synchronizations CUDA itself reports (`set_sync_debug_mode`).

    PYTHONPATH=src .venv/bin/python bench/syncs.py [--batches 4] [--device cuda]

Prints one JSON line per model and batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.corpus import make_tone_corpus  # noqa: E402
from tests.training.syncs import SyncCounter  # noqa: E402

from sslspeech.training.config import load_config  # noqa: E402
from sslspeech.training.data import to_device  # noqa: E402
from sslspeech.training.distributed import resolve_environment  # noqa: E402
from sslspeech.training.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_tone_corpus(
            folder / "data", num_utterances=16, min_frames=20, max_frames=40
        )
        for name in ("hubert", "dinosr", "spidr"):
            overrides = [
                f"run.workdir={folder / name}",
                f"data.manifest={manifest}",
                "run.validate_every=0",
                "logging.progress=false",
                f"run.device={args.device}",
            ]
            config = load_config(REPO / "configs" / f"tiny_{name}.toml", overrides)
            trainer = Trainer(config, resolve_environment(args.device, {}))
            batches = trainer.batches()
            for index in range(args.batches):
                batch = to_device(next(batches), trainer.env.device)
                with warnings.catch_warnings(record=True) as reported:
                    warnings.simplefilter("always")
                    if args.device == "cuda":
                        torch.cuda.set_sync_debug_mode("warn")
                    with SyncCounter() as forward:
                        loss = trainer.objective(trainer.module, batch)
                    with SyncCounter() as backward:
                        loss.total.backward()
                    if args.device == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
                padded = bool((batch["lengths"] != batch["lengths"].max()).any())
                record = {
                    "bench": "syncs",
                    "config": f"tiny_{name}",
                    "batch": index,
                    "padded": padded,
                    "forward_syncs": forward.total,
                    "backward_syncs": backward.total,
                    "ops": dict(forward.ops + backward.ops),
                }
                if args.device == "cuda":
                    record["cuda_reported_syncs"] = sum(
                        "synchroniz" in str(warning.message) for warning in reported
                    )
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
