"""report.html: loss curves, ABX per layer, unit quality, P(phone | unit) and the run's config."""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sslspeech.pipeline.results import (
    RECIPE_COPY,
    iteration_dir,
    targets_dir,
    write_results,
)
from sslspeech.utils.fileio import atomic_open

REPORT_FILE = "report.html"
FIGURES = "report"


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def loss_curves(run_dir: Path, iteration: int) -> tuple[list[tuple[int, float]], ...]:
    """(step, train loss) from the training metrics and (step, val loss) from validation."""
    folder = iteration_dir(run_dir, iteration)
    train, val = [], []
    for record in read_jsonl(folder / "train" / "metrics.jsonl"):
        step = record.get("step")
        if step is None:
            continue
        if "loss" not in record:
            continue
        if record.get("split", "train") == "train":
            train.append((int(step), float(record["loss"])))
        else:
            val.append((int(step), float(record["loss"])))
    separate = [
        (int(r["step"]), float(r["loss"]))
        for r in read_jsonl(folder / "validation.jsonl")
        if "step" in r and "loss" in r
    ]
    return train, sorted(set(val) | set(separate))


def plot_losses(run_dir: Path, out: Path) -> bool:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for iteration, color in ((1, "tab:blue"), (2, "tab:orange")):
        train, val = loss_curves(run_dir, iteration)
        if train:
            axis.plot(*zip(*train, strict=True), color=color, label=f"it{iteration} train")
            drawn = True
        if val:
            axis.plot(*zip(*val, strict=True), "o--", color=color, label=f"it{iteration} val")
            drawn = True
    axis.set(xlabel="step", ylabel="loss", title="Pretraining loss")
    return _save(figure, axis, out, drawn)


def plot_abx(results: dict[str, Any], out: Path) -> bool:
    import matplotlib.pyplot as plt

    abx = results.get("abx", {})
    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for iteration, color in ((1, "tab:blue"), (2, "tab:orange")):
        layers = abx.get(f"it{iteration}_layers")
        if layers:
            xs = list(range(1, len(layers) + 1))
            axis.plot(xs, [100 * v for v in layers], "o-", color=color, label=f"it{iteration}")
            axis.set_xticks(xs)
            drawn = True
    if "mfcc" in abx:
        axis.axhline(100 * abx["mfcc"], color="gray", linestyle="--", label="MFCC")
        drawn = True
    where = f"{abx.get('speaker', '?')}-speaker, {abx.get('context', '?')}-context"
    axis.set(xlabel="layer", ylabel="ABX error (%)", title=f"ABX per layer ({where})")
    return _save(figure, axis, out, drawn)


def plot_quality(results: dict[str, Any], out: Path) -> bool:
    import matplotlib.pyplot as plt

    quality = results.get("quality", {})
    names = [name for name in ("it1_targets", "it2_targets") if name in quality]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4), width_ratios=[3, 1])
    metrics = ("pnmi", "phone_purity", "cluster_purity")
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        values = [float(quality[name].get(metric, 0.0)) for metric in metrics]
        xs = [m + index * width for m in range(len(metrics))]
        left.bar(xs, values, width=width, label=name)
        right.bar([index], [float(quality[name].get("unit_perplexity", 0.0))], label=name)
    left.set_xticks([m + width * (len(names) - 1) / 2 for m in range(len(metrics))], metrics)
    left.set(ylim=(0, 1), title="Unit quality")
    right.set_xticks(range(len(names)), names)
    right.set(title="Unit perplexity")
    return _save(figure, left, out, bool(names))


def _save(figure: Any, axis: Any, out: Path, drawn: bool) -> bool:
    import matplotlib.pyplot as plt

    if drawn:
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out, dpi=100)
    plt.close(figure)
    return drawn


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("wall time", f"{results.get('wall_seconds', 0.0):.0f} s")]
    abx = results.get("abx", {})
    for key in ("mfcc", "it1_best", "it2_best"):
        if key in abx:
            rows.append((f"ABX {key}", f"{100 * abx[key]:.2f} %"))
    for key, value in results.get("best_layer", {}).items():
        rows.append((f"best layer {key}", str(value)))
    for key, value in results.get("best_checkpoint", {}).items():
        rows.append((f"best checkpoint {key}", str(value)))
    for key, value in results.get("pnmi", {}).items():
        rows.append((f"PNMI {key}", f"{value:.4f}"))
    return rows


def _configs(run_dir: Path) -> list[tuple[str, str]]:
    found = []
    for path in [run_dir / RECIPE_COPY, *sorted(run_dir.glob("it*/train/config.toml"))]:
        if path.is_file():
            found.append((str(path.relative_to(run_dir)), path.read_text()))
    return found


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/results.json, the PNG plots under RUN_DIR/report/ and RUN_DIR/report.html."""
    import matplotlib

    matplotlib.use("Agg")
    results = write_results(run_dir)
    figures = run_dir / FIGURES
    figures.mkdir(exist_ok=True)
    sections: list[str] = [
        "<h2>Summary</h2>" + _table(_summary_rows(results)),
    ]
    plots = (
        ("loss.png", "Training and validation loss", lambda p: plot_losses(run_dir, p)),
        ("abx.png", "ABX error per layer", lambda p: plot_abx(results, p)),
        ("quality.png", "Unit quality per iteration", lambda p: plot_quality(results, p)),
    )
    for name, title, draw in plots:
        if draw(figures / name):
            sections.append(_figure(title, f"{FIGURES}/{name}"))
    for iteration in (1, 2):
        heatmap = targets_dir(run_dir, iteration) / "heatmap.png"
        if heatmap.is_file() and f"it{iteration}_targets" in results.get("pnmi", {}):
            target = figures / f"heatmap_it{iteration}_targets.png"
            shutil.copyfile(heatmap, target)
            title = f"P(phone | unit), it{iteration} targets"
            sections.append(_figure(title, f"{FIGURES}/{target.name}"))
    for name, text in _configs(run_dir):
        sections.append(f"<h2>Config: {html.escape(name)}</h2><pre>{html.escape(text)}</pre>")
    sections.append("<h2>results.json</h2><pre>" + html.escape(json.dumps(results, indent=2)))
    sections[-1] += "</pre>"
    out = run_dir / REPORT_FILE
    with atomic_open(out) as handle:
        handle.write(_page(run_dir.name, "\n".join(sections)))
    return out


def _figure(title: str, src: str) -> str:
    return (
        f'<h2>{html.escape(title)}</h2><figure><img src="{html.escape(src)}" '
        f'alt="{html.escape(title)}"></figure>'
    )


def _page(name: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 10px;"
        "text-align:left}img{max-width:100%}pre{background:#f5f5f5;padding:1em;overflow:auto}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>sslspeech run {html.escape(name)}</title><style>{style}</style></head>\n"
        f"<body><h1>sslspeech run: {html.escape(name)}</h1>\n{body}\n</body></html>\n"
    )
