"""Accumulation = DDP: `optim.accumulation=2` on one process vs `--nproc 2` (gloo) with the same
global batch, tiny configs with their own batch settings on the tone corpus (CPU): how many
state tensors (model parameters and buffers, AdamW moments) differ beyond 1e-5 after N steps.

    PYTHONPATH=src .venv/bin/python bench/accumulation.py [--steps 10]

The `sslspeech train` subprocesses import sslspeech from this process's PYTHONPATH. Prints one
JSON line per config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.corpus import make_tone_corpus  # noqa: E402

from sslspeech.training.checkpoint import load_checkpoint  # noqa: E402


def _train(config: str, workdir: Path, manifest: Path, steps: int, *extra: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "sslspeech",
        "train",
        str(REPO / "configs" / config),
        f"run.workdir={workdir}",
        f"data.manifest={manifest}",
        f"run.max_steps={steps}",
        "run.validate_every=0",
        f"checkpoint.save_every={steps}",
        "logging.progress=false",
        *extra,
    ]
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, env=env, check=True, capture_output=True)
    return load_checkpoint(workdir / "checkpoints" / f"step_{steps}.pt")


def _tensors(checkpoint: dict) -> dict[str, torch.Tensor]:
    tensors = {f"model.{key}": value for key, value in checkpoint["model"].items()}
    for index, state in checkpoint["optimizer"]["state"].items():
        tensors.update({f"optimizer.{index}.{k}": v for k, v in state.items()})
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_tone_corpus(
            folder / "data", num_utterances=16, min_frames=20, max_frames=40
        )
        for name in ("tiny_hubert", "tiny_spidr", "tiny_dinosr"):
            one = _train(
                f"{name}.toml", folder / name / "one", manifest, args.steps, "optim.accumulation=2"
            )
            two = _train(
                f"{name}.toml", folder / name / "two", manifest, args.steps, "--nproc", "2"
            )
            ours, theirs = _tensors(one), _tensors(two)
            model = [key for key in ours if key.startswith("model.")]
            differ = [
                key
                for key, value in ours.items()
                if not torch.allclose(theirs[key].double(), value.double(), rtol=1e-5, atol=1e-5)
            ]
            worst = max(
                float((theirs[key].double() - ours[key].double()).abs().max()) for key in ours
            )
            record = {
                "bench": "accumulation",
                "config": name,
                "steps": args.steps,
                "model_tensors": len(model),
                "model_tensors_differing": sum(key.startswith("model.") for key in differ),
                "all_tensors": len(ours),
                "all_tensors_differing": len(differ),
                "max_abs_difference": worst,
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
