"""From a recipe to its list of stages: the iterative HuBERT recipe, a start from an existing
checkpoint, and single SpidR/DinoSR runs. Every stage reads and writes files in RUN_DIR:

    corpus/ or manifest.csv     the audio (synthetic corpus, or a manifest made from a folder)
    manifests/{train,val,all}.csv
    mfcc/        features/, abx.json, kmeans.safetensors, units.jsonl, quality.json, heatmap.png
    start/       the same for the layer of a `[start]` checkpoint
    itN/labels/  {train,val}.csv with units (the targets of iteration N), targets.json
    itN/train/   the training run (config.toml, metrics.jsonl, checkpoints/)
    itN/         validation.jsonl, best.json, abx.json; features/, kmeans, units, quality of
                 its best layer when a next iteration (or a unit-quality check) needs them
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError
from sslspeech.pipeline import tasks
from sslspeech.pipeline.recipe import KMeansConfig, Recipe
from sslspeech.pipeline.stage import Stage

MFCC_RATE = 100.0
MODEL_RATE = 50.0


class _Builder:
    """Accumulates stages; knows where the corpus files are."""

    def __init__(self, recipe: Recipe, run_dir: Path) -> None:
        self.recipe = recipe
        self.run = run_dir
        self.stages: list[Stage] = []
        self.item: Path | None = recipe.corpus.item
        self.alignments: Path | None = recipe.corpus.alignments
        self.all = run_dir / "manifests" / "all.csv"

    def add(self, stage: Stage) -> Stage:
        self.stages.append(stage)
        return stage

    def sharded(self, stage: Stage) -> Stage:
        """Add a per-utterance stage, cut into `[executor] shards` (or manifest-sized) shards."""
        shards = self.recipe.executor.shards
        params = {**stage.params, **({"shards": shards} if shards is not None else {})}
        return self.add(replace(stage, params=params, shard_count=tasks.shard_count))

    @property
    def abx_params(self) -> dict[str, Any]:
        abx = self.recipe.abx
        return {
            "speaker": abx.speaker,
            "context": abx.context,
            "max_size_group": abx.max_size_group,
            "max_x_across": abx.max_x_across,
            "seed": abx.seed,
        }

    # ------------------------------------------------------------------ corpus
    def corpus(self) -> Path:
        """Stages that produce the corpus manifest; returns its path."""
        corpus = self.recipe.corpus
        if corpus.synthetic:
            folder = self.run / "corpus"
            self.item = self.item or folder / "phones.item"
            self.alignments = self.alignments or folder / "alignments.jsonl"
            self.add(
                Stage(
                    name="corpus",
                    function=tasks.make_synthetic_corpus,
                    outputs={
                        "manifest": folder / "manifest.csv",
                        "alignments": folder / "alignments.jsonl",
                        "item": folder / "phones.item",
                        "wav": folder / "wav",
                    },
                    params={
                        "speakers": corpus.speakers,
                        "utterances": corpus.utterances,
                        "seed": corpus.seed,
                    },
                )
            )
            return folder / "manifest.csv"
        if corpus.audio is not None:
            self.add(
                Stage(
                    name="manifest",
                    function=tasks.build_manifest,
                    inputs={"audio": corpus.audio},
                    outputs={"manifest": self.run / "manifest.csv"},
                    params={"extension": corpus.extension},
                )
            )
            return self.run / "manifest.csv"
        assert corpus.manifest is not None  # checked by CorpusConfig
        return corpus.manifest

    def split(self, manifest: Path) -> dict[str, Path]:
        folder = self.all.parent
        inputs = {"manifest": manifest}
        if self.recipe.corpus.val_manifest is not None:
            inputs["val_manifest"] = self.recipe.corpus.val_manifest
        outputs = {name: folder / f"{name}.csv" for name in ("train", "val", "all")}
        self.add(
            Stage(
                name="split",
                function=tasks.split_manifest,
                inputs=inputs,
                outputs=outputs,
                params={"val_fraction": self.recipe.corpus.val_fraction, "seed": self.recipe.seed},
            )
        )
        return outputs

    # ------------------------------------------------------------------ units
    def abx_of_features(self, prefix: str, features: Path, rate: float) -> None:
        if self.item is None:
            return
        self.add(
            Stage(
                name=f"{prefix}.abx",
                function=tasks.score_abx_features,
                inputs={"features": features, "item": self.item},
                outputs={"scores": self.run / prefix / "abx.json"},
                params={**self.abx_params, "frequency": rate},
                resources="gpu",
            )
        )

    def units(self, prefix: str, features: Path, config: KMeansConfig, rate: float) -> Path:
        """k-means -> transcribe -> quality (when alignments exist); returns the units JSONL."""
        folder = self.run / prefix
        self.add(
            Stage(
                name=f"{prefix}.kmeans",
                function=tasks.fit_kmeans,
                inputs={"features": features},
                outputs={"kmeans": folder / "kmeans.safetensors"},
                params={"k": config.k, "fraction": config.fraction, "seed": config.seed},
                resources="gpu",
                processes=self.recipe.executor.kmeans_processes,
            )
        )
        self.sharded(
            Stage(
                name=f"{prefix}.transcribe",
                function=tasks.transcribe_units,
                inputs={"features": features, "kmeans": folder / "kmeans.safetensors"},
                outputs={"units": folder / "units.jsonl"},
                resources="gpu",
            )
        )
        if self.alignments is not None:
            self.add(
                Stage(
                    name=f"{prefix}.quality",
                    function=tasks.unit_quality,
                    inputs={"units": folder / "units.jsonl", "alignments": self.alignments},
                    outputs={"scores": folder / "quality.json", "heatmap": folder / "heatmap.png"},
                    params={"frequency": rate, "k": config.k},
                )
            )
        return folder / "units.jsonl"

    def merge(self, iteration: int, manifests: dict[str, Path], units: Path, source: str) -> Path:
        folder = self.run / f"it{iteration}" / "labels"
        config = self.recipe.iteration(iteration)
        self.add(
            Stage(
                name=f"it{iteration}.merge",
                function=tasks.merge_labels,
                inputs={
                    "train": manifests["train"],
                    "val": manifests["val"],
                    "units": units,
                    "config": config.config,
                },
                outputs={
                    "train_labels": folder / "train.csv",
                    "val_labels": folder / "val.csv",
                    "targets": self.run / f"it{iteration}" / "targets.json",
                },
                params={
                    "from_mfcc": source == "mfcc",
                    "source": source,
                    "overrides": config.overrides,
                },
            )
        )
        return folder

    # ------------------------------------------------------------------ models
    def mfcc_features(self, manifest: Path) -> Path:
        """MFCC features of every utterance, and their ABX score when there is an item file."""
        features = self.run / "mfcc" / "features"
        self.sharded(
            Stage(
                name="mfcc.features",
                function=tasks.extract_mfcc,
                inputs={"manifest": manifest},
                outputs={"features": features},
            )
        )
        self.abx_of_features("mfcc", features, MFCC_RATE)
        return features

    def train(self, iteration: int, train: Path, val: Path) -> Path | int | None:
        """train -> validate -> ABX per layer; returns the chosen layer (or the ABX JSON)."""
        config = self.recipe.iteration(iteration)
        folder = self.run / f"it{iteration}"
        workdir = folder / "train"
        self.add(
            Stage(
                name=f"it{iteration}.train",
                function=tasks.train_model,
                inputs={"config": config.config, "train": train, "val": val},
                outputs={"last": workdir / "checkpoints" / "last.pt"},
                params={"overrides": config.overrides, "workdir": str(workdir)},
                resources="train",
                clean=(workdir,),
            )
        )
        self.add(
            Stage(
                name=f"it{iteration}.validate",
                function=tasks.validate_checkpoints,
                inputs={"checkpoints": workdir / "checkpoints" / "last.pt", "val": val},
                outputs={"scores": folder / "validation.jsonl", "best": folder / "best.json"},
                params={"workdir": str(workdir)},
                resources="gpu",
            )
        )
        prefix = f"it{iteration}"
        return self.choose_layer(prefix, folder / "best.json", config.layers, config.layer)

    def choose_layer(
        self, prefix: str, checkpoint: Path, layers: list[int], fixed: int | None
    ) -> Path | int | None:
        """ABX per layer when there is an item file; the layer is `fixed`, else the best one
        (the ABX JSON names it), None when neither is known."""
        if self.item is None:
            return fixed
        out = self.run / prefix / "abx.json"
        self.add(
            Stage(
                name=f"{prefix}.abx",
                function=tasks.score_abx_layers,
                inputs={"checkpoint": checkpoint, "item": self.item, "manifest": self.all},
                outputs={"scores": out},
                params={
                    **self.abx_params,
                    "layers": layers,
                    "before_residual": self.recipe.layer_output,
                },
                resources="gpu",
            )
        )
        return out if fixed is None else fixed

    def layer_features(
        self, prefix: str, checkpoint: Path, layer: Path | int | None, all_: Path
    ) -> Path:
        """Features of a checkpoint's layer (a number, or the best layer of an ABX JSON)."""
        if layer is None:
            raise ConfigError(
                f"{prefix}: no ABX item file to choose a layer with; set [corpus] item or "
                f"the layer (e.g. [{prefix}] layer = 6)"
            )
        out = self.run / prefix / "features"
        inputs = {"checkpoint": checkpoint, "manifest": all_}
        params: dict[str, Any] = {"before_residual": self.recipe.layer_output}
        if isinstance(layer, Path):
            inputs["layer"] = layer
        else:
            params["layer"] = layer
        self.sharded(
            Stage(
                name=f"{prefix}.features",
                function=tasks.extract_layer_features,
                inputs=inputs,
                outputs={"features": out},
                params=params,
                resources="gpu",
            )
        )
        return out


def build_stages(recipe: Recipe, run_dir: Path) -> list[Stage]:
    """The ordered stages of `recipe` in `run_dir`."""
    builder = _Builder(recipe, run_dir)
    manifests = builder.split(builder.corpus())
    if recipe.kind == "hubert" and recipe.start.checkpoint is None:
        features = builder.mfcc_features(manifests["all"])
        units = builder.units("mfcc", features, recipe.mfcc, MFCC_RATE)
        source = "mfcc"
    elif recipe.kind == "hubert":
        checkpoint = recipe.start.checkpoint
        assert checkpoint is not None
        layer: Path | int | None
        if recipe.start.layer is not None:
            layer = recipe.start.layer
        else:
            layer = builder.choose_layer("start", checkpoint, [], None)
        features = builder.layer_features("start", checkpoint, layer, manifests["all"])
        units = builder.units("start", features, recipe.units, MODEL_RATE)
        source = "start"
    else:
        return _single_run(builder, manifests)
    for iteration in range(1, recipe.iterations + 1):
        labels = builder.merge(iteration, manifests, units, source)
        abx = builder.train(iteration, labels / "train.csv", labels / "val.csv")
        if iteration < recipe.iterations:
            prefix = f"it{iteration}"
            best = run_dir / prefix / "best.json"
            features = builder.layer_features(prefix, best, abx, manifests["all"])
            units = builder.units(prefix, features, recipe.units, MODEL_RATE)
            source = prefix
    return builder.stages


def _single_run(builder: _Builder, manifests: dict[str, Path]) -> list[Stage]:
    """SpidR / DinoSR: train on raw audio, pick the best layer, measure its units."""
    run = builder.run
    features = run / "mfcc" / "features"
    builder.mfcc_features(manifests["all"])
    if builder.alignments is not None:
        builder.units("mfcc", features, builder.recipe.mfcc, MFCC_RATE)
    layer = builder.train(1, manifests["train"], manifests["val"])
    if builder.alignments is not None:
        best = run / "it1" / "best.json"
        layer_features = builder.layer_features("it1", best, layer, manifests["all"])
        builder.units("it1", layer_features, builder.recipe.units, MODEL_RATE)
    return builder.stages
