"""Does `run.init_labels_from` (label embeddings = final_proj(k-means centroids)) lower the loss
of a continued HuBERT run after N steps, versus random label embeddings?

The setting is the second HuBERT iteration on the synthetic demo corpus (configs/demo.toml,
smaller): the demo pipeline trains it1 on MFCC k-means labels, extracts it1's best layer,
clusters it (the centroids have the model's width) and writes the it2 labels. Then, per seed,
five it2 runs of N steps, all but "scratch" from `run.init_from` = it1:
- "centroids": `run.init_labels_from` = it1's k-means (the it2 targets);
- "shuffled": the same centroids given to the wrong clusters (same spread, no geometry);
- "fresh": label embeddings drawn anew (`run.init_fresh = ["label_embeddings"]`);
- "it1labels": it1's own label embeddings (of the MFCC clusters: loaded since K is the same);
- "scratch": the recipe's it2, from random weights.
MFCC centroids (39-dim) cannot be projected: the first iteration has no such initialization.

    PYTHONPATH=src python bench/init_labels.py [--steps 60] [--seeds 0 1] [--it1-steps 150]

Prints one JSON line per run (train loss of each logged window, validation loss at the end)
and one summary line (medians over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

from sslspeech.pipeline.recipe import load_recipe  # noqa: E402
from sslspeech.pipeline.run import run_recipe  # noqa: E402
from sslspeech.training.config import load_config  # noqa: E402
from sslspeech.training.metrics import read_metrics  # noqa: E402
from sslspeech.training.trainer import train  # noqa: E402
from sslspeech.units.kmeans import KMeans  # noqa: E402

VARIANTS = ("centroids", "shuffled", "fresh", "it1labels", "scratch")


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "init_labels", **fields}), flush=True)


def demo_it2_inputs(run_dir: Path, args: argparse.Namespace) -> Path:
    """The demo pipeline up to the it2 labels (it2 itself trains one step); returns run_dir."""
    overrides = [
        f"corpus.speakers={args.speakers}",
        f"corpus.utterances={args.utterances}",
        f'it1.overrides={{"run.max_steps" = {args.it1_steps}}}',
        'it2.overrides={"run.max_steps" = 1}',
    ]
    run_recipe(load_recipe(CONFIGS / "demo.toml", overrides), run_dir)
    return run_dir


def centroid_file(run_dir: Path, variant: str) -> Path:
    """it1's k-means, or (`shuffled`) a copy whose rows are permuted (fixed seed)."""
    kmeans = run_dir / "it1" / "kmeans.safetensors"
    if variant == "centroids":
        return kmeans
    shuffled = run_dir / "bench" / "kmeans_shuffled.safetensors"
    if not shuffled.is_file():
        centroids = KMeans.load(kmeans).centroids
        order = torch.randperm(len(centroids), generator=torch.Generator().manual_seed(0))
        shuffled.parent.mkdir(parents=True, exist_ok=True)
        KMeans(centroids[order]).save(shuffled)
    return shuffled


def continued_run(run_dir: Path, variant: str, seed: int, args: argparse.Namespace) -> dict:
    """One it2 run of `args.steps` steps; its train-loss curve and final validation loss."""
    labels = run_dir / "it2" / "labels"
    workdir = run_dir / "bench" / f"{variant}_seed{seed}"
    overrides = [
        f"run.workdir={workdir}",
        f"run.seed={seed}",
        f"run.max_steps={args.steps}",
        f"run.validate_every={args.steps}",
        "run.validation=inline",
        f"data.manifest={labels / 'train.csv'}",
        f"data.val_manifest={labels / 'val.csv'}",
        f"data.max_batch_samples={args.batch_samples}",
        f"checkpoint.save_every={args.steps}",
        "logging.log_every=5",
        "logging.progress=false",
    ]
    if variant != "scratch":
        overrides.append(f"run.init_from={run_dir / 'it1' / 'train' / 'checkpoints' / 'last.pt'}")
    if variant == "fresh":
        overrides.append('run.init_fresh=["label_embeddings"]')
    if variant in ("centroids", "shuffled"):
        overrides.append(f"run.init_labels_from={centroid_file(run_dir, variant)}")
    train(load_config(CONFIGS / "tiny_demo_hubert.toml", overrides))
    records = list(read_metrics(workdir / "metrics.jsonl"))
    curve = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    val = [r["loss"] for r in records if r["split"] == "val"]
    return {"variant": variant, "seed": seed, "train_loss": curve, "val_loss": val[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench_init_labels")
    parser.add_argument("--steps", type=int, default=60, help="steps of each it2 run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--it1-steps", type=int, default=150)
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--batch-samples", type=int, default=256_000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_dir = demo_it2_inputs(args.run_dir.absolute(), args)
    results = []
    for seed in args.seeds:  # variants interleaved within each seed
        for variant in args.variants:
            result = continued_run(run_dir, variant, seed, args)
            emit(**result, steps=args.steps)
            results.append(result)
    summary: dict[str, Any] = {"steps": args.steps, "seeds": args.seeds}
    for variant in args.variants:
        mine = [r for r in results if r["variant"] == variant]
        first = min(mine[0]["train_loss"])
        summary[variant] = {
            "first_window_loss": statistics.median(r["train_loss"][first] for r in mine),
            "final_train_loss": statistics.median(r["train_loss"][args.steps] for r in mine),
            "val_loss": statistics.median(r["val_loss"] for r in mine),
        }
    emit(summary=summary)


if __name__ == "__main__":
    sys.exit(main())
