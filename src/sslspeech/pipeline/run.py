"""Run a recipe: build its stages, pick the executor, run, gather results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError
from sslspeech.pipeline.executors import LocalExecutor, SlurmExecutor
from sslspeech.pipeline.recipe import Recipe, recipe_to_dict
from sslspeech.pipeline.recipes import build_stages
from sslspeech.pipeline.results import RECIPE_COPY, write_results
from sslspeech.pipeline.runner import Executor, Runner
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.tomlconfig import dump_toml


def stage_executor(recipe: Recipe, run_dir: Path, name: str | None = None) -> Executor:
    """The recipe's executor, or `name` ("local" / "slurm") when given."""
    config = recipe.executor
    if (name or config.name) == "local":
        return LocalExecutor()
    return SlurmExecutor(
        folder=run_dir / "slurm",
        resources={"cpu": config.cpu, "gpu": config.gpu, "train": config.train},
        account=config.account,
        partition=config.partition,
        qos=config.qos,
        constraint=config.constraint,
        cluster=config.cluster or None,
    )


def check_inputs(recipe: Recipe) -> None:
    """Every file the recipe names exists, before any stage is planned (a missing manifest is
    named as such, not found later as some stage's missing input)."""
    named = {
        **{f"[corpus] {key}": getattr(recipe.corpus, key) for key in _CORPUS_INPUTS},
        "[start] checkpoint": recipe.start.checkpoint,
        "[it1] config": recipe.it1.config,
        "[it2] config": recipe.it2.config if recipe.it2 is not None else None,
    }
    for key, path in named.items():
        if path is not None and not Path(path).exists():
            raise ConfigError(
                f"{key} = {path}: no such file or directory; fix the recipe (relative paths are "
                "relative to the recipe file) or pass an override, e.g. corpus.manifest=PATH"
            )


_CORPUS_INPUTS = ("manifest", "audio", "val_manifest", "item", "alignments")


def run_recipe(
    recipe: Recipe, run_dir: Path | None = None, executor: str | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage of `recipe` in `run_dir`; returns results.json's content."""
    run_dir = (run_dir or recipe.run_dir).absolute()
    check_inputs(recipe)
    stages = build_stages(recipe, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(run_dir / RECIPE_COPY) as handle:
        handle.write(
            dump_toml(
                recipe_to_dict(recipe), "Resolved sslspeech pipeline recipe (paths absolute)."
            )
        )
    Runner(run_dir, stages, stage_executor(recipe, run_dir, executor), recipe.device).run()
    return write_results(run_dir)
