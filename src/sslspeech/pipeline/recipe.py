"""The recipe TOML: what corpus, which targets, which training configs, where to run.

Relative paths in a recipe are resolved against the recipe file's directory. Unknown keys are
errors that name the key, its line and the closest valid key (`sslspeech.utils.tomlconfig`);
dotted overrides (`mfcc.k=50`, `it1.overrides.run.max_steps=200`) are applied before
validation.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import ConfigError
from sslspeech.training.config import TrainConfig, load_config
from sslspeech.utils.tomlconfig import build, file_place, read_toml, split_override


@dataclass(frozen=True, kw_only=True)
class CorpusConfig:
    """The audio: exactly one of `synthetic`, `manifest` or `audio`."""

    synthetic: bool = False
    """Make the built-in espeak-ng corpus (phone alignments and an ABX item file included)."""
    speakers: int = 18
    """Synthetic corpus: number of voices."""
    utterances: int = 40
    """Synthetic corpus: utterances per voice."""
    seed: int = 0
    """Synthetic corpus: seed (the corpus is deterministic for a seed)."""
    manifest: Path | None = None
    """An existing manifest (CSV, fairseq TSV or JSONL)."""
    audio: Path | None = None
    """A directory or uncompressed tar from which `sslspeech manifest` builds the manifest."""
    extension: str = ".wav"
    """Audio file extension when building a manifest from `audio`."""
    val_manifest: Path | None = None
    """Validation manifest; without it `val_fraction` of the corpus is held out."""
    val_fraction: float = 0.1
    """Fraction of utterances held out for validation when there is no `val_manifest`."""
    item: Path | None = None
    """ABX item file (ZeroSpeech format); the synthetic corpus provides its own."""
    alignments: Path | None = None
    """Phone alignments JSONL at 10 ms for unit quality (PNMI); the synthetic corpus has one."""

    def __post_init__(self) -> None:
        sources = [self.synthetic, self.manifest is not None, self.audio is not None]
        if sum(sources) != 1:
            raise ConfigError(
                "[corpus]: set exactly one of synthetic = true, manifest = PATH or audio = DIR"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"[corpus] val_fraction must be in (0, 1), got {self.val_fraction}")
        _positive("corpus.speakers", self.speakers)
        _positive("corpus.utterances", self.utterances)


@dataclass(frozen=True, kw_only=True)
class KMeansConfig:
    """A k-means fit on features, and its transcription into units."""

    k: int = 100
    """Number of clusters."""
    fraction: float = 1.0
    """Fraction of the files the k-means is fitted on."""
    seed: int = 0
    """k-means++ initialization seed."""

    def __post_init__(self) -> None:
        _positive("k", self.k)
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"k-means fraction must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True, kw_only=True)
class IterationConfig:
    """One pretraining run of the recipe: a training TOML and overrides of its keys (as
    `sslspeech train CONFIG key=value`), and the layer whose units feed the next iteration."""

    config: Path
    """Training config TOML (see configs/)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted training-config keys and values, e.g. {"optim.lr" = 5e-4}."""
    layers: list[int] = field(default_factory=list)
    """Layers scored by ABX to choose the best one; empty: every layer."""
    layer: int | None = None
    """Layer whose units are the next targets; none: the best by ABX (needs an item file)."""


@dataclass(frozen=True, kw_only=True)
class StartConfig:
    """Start from an existing checkpoint: its layer's units are the first iteration's targets."""

    checkpoint: Path | None = None
    """Any checkpoint `sslspeech.models.load_model` reads."""
    layer: int | None = None
    """Layer (1-based) whose features are clustered; none: the best layer by ABX."""


@dataclass(frozen=True, kw_only=True)
class AbxConfig:
    """How layers and MFCC are scored (sslspeech.evaluation.abx on the corpus item file)."""

    speaker: Literal["within", "across"] = "across"
    context: Literal["within", "any"] = "within"
    max_size_group: int | None = 10
    max_x_across: int | None = 5
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class StageResources:
    """Resources of the SLURM jobs of one kind of stage (`Stage.resources`: cpu, gpu, train),
    in submitit's parameter names. The pipeline submits cpu/gpu stages with them directly; a
    train stage goes through the training launcher, whose `SlurmOptions` (the `train --slurm`
    flags) they are turned into."""

    gpus_per_node: int = 0
    """GPUs of a job; a k-means job of several tasks: GPUs of each task."""
    cpus_per_task: int = 4
    mem_gb: int = 32
    timeout_min: int = 60
    nodes: int = 1
    """Nodes of a training job, or of a k-means job of several tasks (one-task jobs take one)."""


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """Where stages run: this process (`local`) or SLURM jobs (`slurm`, via submitit)."""

    name: Literal["local", "slurm"] = "local"
    shards: int | None = None
    """Shards of every per-utterance stage (features, transcription): local processes or a
    SLURM job array; none: one per 5000 utterances of the manifest."""
    kmeans_processes: int = 1
    """Processes of each k-means stage, one distributed job whose sums are all-reduced (the
    centroids of one process): local worker processes (gloo; NCCL with device = "cuda"), or
    the tasks of one SLURM job over `[executor.gpu] nodes`, each with its `gpus_per_node`.
    Not `shards`: a job's tasks all run at once, an array's shards need not."""
    cluster: str = ""
    """submitit cluster: "" (auto: slurm when available), "local" (subprocesses), "debug"."""
    account: str = ""
    partition: str = ""
    qos: str = ""
    constraint: str = ""
    cpu: StageResources = field(default_factory=StageResources)
    """Corpus, manifests, MFCC features, unit quality."""
    gpu: StageResources = field(default_factory=lambda: StageResources(gpus_per_node=1))
    """Layer features, k-means, transcription, ABX, validation."""
    train: StageResources = field(
        default_factory=lambda: StageResources(gpus_per_node=8, cpus_per_task=10, timeout_min=1440)
    )
    """Pretraining (also validation)."""

    def __post_init__(self) -> None:
        if self.shards is not None:
            _positive("executor.shards", self.shards)
        _positive("executor.kmeans_processes", self.kmeans_processes)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The whole recipe. `kind = "hubert"` runs `iterations` HuBERT iterations (targets: MFCC
    units, or the `[start]` checkpoint's units, then each iteration's best layer);
    `kind = "spidr"` / `"dinosr"` is a single self-supervised run from `[it1]`."""

    kind: Literal["hubert", "spidr", "dinosr"] = "hubert"
    run_dir: Path = Path("runs/pipeline")
    """Run directory (relative to the recipe file); `--run-dir` overrides it."""
    iterations: int = 2
    seed: int = 0
    device: str = "cpu"
    """Device of the feature, ABX and k-means stages (training uses its own config)."""
    before_residual: bool | None = None
    """Layer features before the residual add (True) or the full layer output (False); none:
    False for HuBERT (fairseq's feature dump), True for SpidR/DinoSR (their convention)."""
    corpus: CorpusConfig
    mfcc: KMeansConfig = field(default_factory=KMeansConfig)
    """k-means on MFCC: the first iteration's targets."""
    units: KMeansConfig = field(default_factory=KMeansConfig)
    """k-means on an iteration's best layer: the next iteration's targets."""
    it1: IterationConfig
    it2: IterationConfig | None = None
    start: StartConfig = field(default_factory=StartConfig)
    abx: AbxConfig = field(default_factory=AbxConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        if self.kind != "hubert" and self.iterations != 1:
            raise ConfigError(f"kind = {self.kind!r} is a single run: set iterations = 1")
        if not 1 <= self.iterations <= 2:
            raise ConfigError(f"iterations must be 1 or 2, got {self.iterations}")
        if self.iterations == 2 and self.it2 is None:
            raise ConfigError("iterations = 2 needs an [it2] table (config = training TOML)")
        if self.start.checkpoint is not None and self.kind != "hubert":
            raise ConfigError("[start] applies to kind = 'hubert' only")

    @property
    def layer_output(self) -> bool:
        """The `before_residual` flag of every layer-feature stage."""
        if self.before_residual is not None:
            return self.before_residual
        return self.kind != "hubert"

    def iteration(self, number: int) -> IterationConfig:
        """The `[itN]` table."""
        config = self.it1 if number == 1 else self.it2
        if config is None:
            raise ConfigError(f"no [it{number}] table in the recipe")
        return config


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe TOML; relative paths are taken from its folder."""
    data, lines = read_toml(path, "recipe")
    overridden = {apply_override(data, override) for override in overrides}
    in_file = file_place(str(path), lines)

    def place(key: str) -> str:
        return "command line" if key in overridden else in_file(key)

    return build(Recipe, data, place=place, base=path.resolve().parent)


def apply_override(data: dict[str, Any], override: str) -> str:
    """Set a dotted `key=value` in the nested table (the value is parsed as TOML if it can be);
    returns the dotted key of the field it sets."""
    key, raw = split_override(override, example="mfcc.k=50")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.split(".")
    table = data
    for index, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: index + 1])} is no table")
        # keys under a free-form table (training overrides) keep their dots
        if part == "overrides":
            table[".".join(parts[index + 1 :])] = value
            return ".".join(parts[: index + 1])
    table[parts[-1]] = value
    return key


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain TOML-ready data (paths as strings, None left out) for the run directory's copy."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    result: dict[str, Any] = clean(dataclasses.asdict(recipe))
    return result


# ----------------------------------------------------------------------------- training


def iteration_training_config(
    config: Path,
    overrides: Mapping[str, Any],
    *,
    workdir: str,
    manifest: str,
    val_manifest: str,
    source: str,
) -> TrainConfig:
    """The training config of an iteration: its TOML, the recipe's overrides (errors name
    `source`), then the pipeline's own paths."""
    paths = {"run.workdir": workdir, "data.manifest": manifest, "data.val_manifest": val_manifest}
    # The recipe scores every checkpoint in its own validate stage: no validation jobs from
    # the training launcher on top of it (unless the recipe asks).
    defaults = {"run.validation": "inline"}
    return load_config(config, changes={**defaults, **overrides, **paths}, changes_from=source)


def check_training(recipe: Recipe, source: Path) -> None:
    """Resolve every iteration's training config now, so that a wrong override stops the
    pipeline at its start (not when the training stage comes); errors name the recipe key."""
    for number in range(1, recipe.iterations + 1):
        iteration = recipe.iteration(number)
        try:
            iteration_training_config(
                iteration.config,
                iteration.overrides,
                workdir=str(recipe.run_dir / f"it{number}" / "train"),
                manifest="manifests/train.csv",
                val_manifest="manifests/val.csv",
                source=f"it{number}.overrides",
            )
        except ConfigError as error:
            raise ConfigError(
                f"{source}: [it{number}] training config {iteration.config}: {error}"
            ) from None
