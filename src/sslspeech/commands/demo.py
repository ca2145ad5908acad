"""`sslspeech demo`: the two-iteration HuBERT recipe at toy scale on synthetic speech, on CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError

# configs/ of a source checkout (the package is installed from it, editable or not).
REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)"
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=REPO_CONFIGS / "demo.toml",
        help="recipe TOML (default: configs/demo.toml)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. mfcc.k=50"
    )


def run(args: argparse.Namespace) -> int:
    from sslspeech.pipeline.recipe import check_training, load_recipe
    from sslspeech.pipeline.report import write_report
    from sslspeech.pipeline.run import run_recipe

    if not args.recipe.is_file():
        raise ConfigError(
            f"demo recipe not found at {args.recipe}; run from a source checkout or pass --recipe"
        )
    start = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)
    check_training(recipe, args.recipe)
    run_dir = args.workdir.absolute()
    print(f"sslspeech demo: running {args.recipe.name} in {run_dir}", flush=True)
    results = run_recipe(recipe, run_dir)
    report = write_report(run_dir)
    print(summary(results, time.perf_counter() - start))
    print(f"report: {report}")
    print(run_dir)
    return 0


def learning_checks(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """The two claims the demo must show, each with whether it holds."""
    abx, pnmi = results.get("abx", {}), results.get("pnmi", {})
    checks = []
    if "mfcc" in abx and "it1_best" in abx:
        checks.append(
            (
                f"it1 best layer beats MFCC on ABX: {100 * abx['it1_best']:.2f}% < "
                f"{100 * abx['mfcc']:.2f}%",
                abx["it1_best"] < abx["mfcc"],
            )
        )
    if "it1_targets" in pnmi and "it2_targets" in pnmi:
        checks.append(
            (
                f"it1-layer units PNMI {pnmi['it2_targets']:.3f} >= MFCC units PNMI "
                f"{pnmi['it1_targets']:.3f} - 0.01",
                pnmi["it2_targets"] >= pnmi["it1_targets"] - 0.01,
            )
        )
    return checks


def summary(results: dict[str, Any], seconds: float) -> str:
    lines = [f"demo finished in {seconds / 60:.1f} min"]
    abx = results.get("abx", {})
    for key in ("mfcc", "it1_best", "it2_best"):
        if key in abx:
            lines.append(f"  ABX {key}: {100 * abx[key]:.2f}%")
    for key, value in results.get("best_layer", {}).items():
        lines.append(f"  best layer {key}: {value}")
    for key, value in results.get("pnmi", {}).items():
        lines.append(f"  PNMI {key}: {value:.3f}")
    for text, ok in learning_checks(results):
        lines.append(f"  [{'ok' if ok else 'NOT MET'}] {text}")
    return "\n".join(lines)
