"""results.json: the headline numbers of a run, gathered from the files its stages wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sslspeech.pipeline.runner import PLAN_FILE
from sslspeech.utils.fileio import atomic_open

RESULTS_FILE = "results.json"

# Where the stages write what results.json gathers (relative to the run directory).
MFCC_ABX = Path("mfcc/abx.json")
RECIPE_COPY = Path("recipe.toml")


def iteration_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / f"it{iteration}"


def targets_dir(run_dir: Path, iteration: int) -> Path:
    """Folder of the units that iteration `iteration` trains on (quality.json, heatmap.png)."""
    link = run_dir / f"it{iteration}" / "targets.json"
    if link.is_file():
        return run_dir / json.loads(link.read_text())["source"]
    return run_dir / ("mfcc" if iteration == 1 else f"it{iteration - 1}")


def read_json_if_exists(path: Path) -> Any:
    """The JSON content of `path`, None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def wall_seconds(run_dir: Path) -> float:
    """Time spent by every `pipeline run` on this directory (resumed runs add up)."""
    plan = read_json_if_exists(run_dir / PLAN_FILE) or {}
    return round(sum(s["ended"] - s["started"] for s in plan.get("sessions", [])), 1)


def collect_results(run_dir: Path) -> dict[str, Any]:
    """The results dictionary: wall time, ABX (MFCC and per layer), best layers, PNMI."""
    results: dict[str, Any] = {"wall_seconds": wall_seconds(run_dir)}
    abx: dict[str, Any] = {}
    mfcc = read_json_if_exists(run_dir / MFCC_ABX)
    if mfcc is not None:
        abx["mfcc"] = mfcc["abx"]
        abx["speaker"], abx["context"] = mfcc["speaker"], mfcc["context"]
    best_layer: dict[str, int] = {}
    best_checkpoint: dict[str, str] = {}
    val_loss: dict[str, float] = {}
    pnmi: dict[str, float] = {}
    quality: dict[str, Any] = {}
    for iteration in (1, 2):
        folder = iteration_dir(run_dir, iteration)
        layers = read_json_if_exists(folder / "abx.json")
        if layers is not None:
            abx[f"it{iteration}_layers"] = [entry["abx"] for entry in layers["layers"]]
            abx[f"it{iteration}_best"] = layers["best_abx"]
            best_layer[f"it{iteration}"] = layers["best_layer"]
        best = read_json_if_exists(folder / "best.json")
        if best is not None:
            best_checkpoint[f"it{iteration}"] = best["checkpoint"]
            val_loss[f"it{iteration}"] = best["val_loss"]
        scores = read_json_if_exists(targets_dir(run_dir, iteration) / "quality.json")
        if scores is not None:
            pnmi[f"it{iteration}_targets"] = scores["pnmi"]
            quality[f"it{iteration}_targets"] = scores
    results.update(
        abx=abx,
        best_layer=best_layer,
        best_checkpoint=best_checkpoint,
        val_loss=val_loss,
        pnmi=pnmi,
        quality=quality,
    )
    return results


def write_results(run_dir: Path) -> dict[str, Any]:
    """Gather and write RUN_DIR/results.json atomically; returns what was written."""
    results = collect_results(run_dir)
    with atomic_open(run_dir / RESULTS_FILE) as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    return results
