"""`sslspeech pipeline run RECIPE.toml` and `sslspeech pipeline status RUN_DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_command", metavar="{run,status}", required=True)
    run = sub.add_parser(
        "run",
        help="run or resume a recipe (stages whose inputs are unchanged are skipped)",
        description="Run the stages of a recipe TOML in a run directory; rerunning the same "
        "command after a crash resumes where it stopped.",
    )
    run.add_argument("recipe", type=Path, help="recipe TOML (see configs/demo.toml)")
    run.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. mfcc.k=50"
    )
    run.add_argument("--run-dir", type=Path, help="run directory (default: the recipe's run_dir)")
    run.add_argument(
        "--executor", choices=("local", "slurm"), help="where stages run (default: the recipe's)"
    )
    run.add_argument("--report", action="store_true", help="write report.html at the end")
    status = sub.add_parser(
        "status",
        help="table of the stages of a run directory",
        description="Stage, status (done/running/failed/pending), duration and key results.",
    )
    status.add_argument("run_dir", type=Path, help="run directory of `pipeline run`")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.pipeline_command == "status":
        return _status(args)
    from sslspeech.pipeline.recipe import check_training, load_recipe
    from sslspeech.pipeline.run import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    check_training(recipe, args.recipe)
    run_dir = args.run_dir.absolute() if args.run_dir else recipe.run_dir
    results = run_recipe(recipe, run_dir, args.executor)
    if args.report:
        from sslspeech.pipeline.report import write_report

        write_report(run_dir)
    print(json.dumps({"run_dir": str(run_dir), **results}))
    return 0


def _status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sslspeech.pipeline.status import format_table, stage_rows

    rows = stage_rows(args.run_dir)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 1 if any(row.status == "failed" for row in rows) else 0
