"""A run directory with the files the stages write, filled with made-up numbers (report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _heatmap(path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 3))
    axis.imshow(np.random.default_rng(seed).random((10, 20)), cmap="viridis")
    figure.savefig(path)
    plt.close(figure)


def make_fake_run(run: Path) -> Path:
    """Two iterations' worth of stage outputs, as `pipeline run` would leave them."""
    _json(run / "pipeline.json", {"stages": [], "sessions": [{"started": 10.0, "ended": 70.5}]})
    (run / "recipe.toml").write_text('kind = "hubert"\n[mfcc]\nk = 50\n')
    _json(
        run / "mfcc" / "abx.json",
        {"abx": 0.10, "speaker": "across", "context": "within"},
    )
    for iteration, source in ((1, "mfcc"), (2, "it1")):
        folder = run / f"it{iteration}"
        (folder / "labels").mkdir(parents=True)
        _json(folder / "targets.json", {"source": source})
        (folder / "train").mkdir()
        (folder / "train" / "config.toml").write_text(f"[run]\nmax_steps = {100 * iteration}\n")
        lines = [json.dumps({"step": s, "loss": 5.0 - s / 50}) for s in range(10, 110, 10)]
        (folder / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        val = [json.dumps({"step": s, "loss": 4.8 - s / 60, "checkpoint": "x"}) for s in (50, 100)]
        (folder / "validation.jsonl").write_text("\n".join(val) + "\n")
        layers = [{"layer": n, "abx": 0.1 - 0.01 * iteration - 0.005 * (n == 2)} for n in (1, 2, 3)]
        _json(
            folder / "abx.json",
            {"layers": layers, "best_layer": 2, "best_abx": layers[1]["abx"]},
        )
        _json(
            folder / "best.json", {"checkpoint": f"/x/it{iteration}/step_100.pt", "val_loss": 3.1}
        )
    for index, source in enumerate(("mfcc", "it1")):
        quality = {
            "pnmi": 0.3 + 0.1 * index,
            "phone_purity": 0.4 + 0.1 * index,
            "cluster_purity": 0.2,
            "unit_perplexity": 40.0 + index,
        }
        _json(run / source / "quality.json", quality)
        _heatmap(run / source / "heatmap.png", index)
    return run
