"""The recipe TOML: what corpus, which targets, which training configs, where to run.

Relative paths in a recipe are resolved against the recipe file's directory. Unknown keys are
errors that name the key and suggest the closest valid one; dotted overrides
(`mfcc.k=50`, `it1.overrides.max_steps=200`) are applied before validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import ConfigError


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
class TrainConfig:
    """One pretraining run: a training TOML and overrides (`sslspeech train CONFIG key=value`)."""

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
    """Any checkpoint `sslspeech.interop.load_model` reads."""
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
class SlurmRequest:
    """Resources of one kind of job (submitit parameter names)."""

    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: int = 32
    timeout_min: int = 60
    nodes: int = 1


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """Where stages run: this process (`local`) or SLURM jobs (`slurm`, via submitit)."""

    name: Literal["local", "slurm"] = "local"
    shards: int | None = None
    """Shards of every per-utterance stage (features, transcription): local processes or a
    SLURM job array; none: one per 5000 utterances of the manifest."""
    cluster: str = ""
    """submitit cluster: "" (auto: slurm when available), "local" (subprocesses), "debug"."""
    account: str = ""
    partition: str = ""
    qos: str = ""
    constraint: str = ""
    cpu: SlurmRequest = field(default_factory=SlurmRequest)
    """Feature extraction, k-means, transcription, evaluation."""
    gpu: SlurmRequest = field(default_factory=lambda: SlurmRequest(gpus_per_node=1))
    """Layer features and ABX of a model."""
    train: SlurmRequest = field(
        default_factory=lambda: SlurmRequest(gpus_per_node=8, cpus_per_task=10, timeout_min=1440)
    )
    """Pretraining (also validation)."""

    def __post_init__(self) -> None:
        if self.shards is not None:
            _positive("executor.shards", self.shards)


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
    it1: TrainConfig
    it2: TrainConfig | None = None
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

    def train_config(self, iteration: int) -> TrainConfig:
        config = self.it1 if iteration == 1 else self.it2
        if config is None:
            raise ConfigError(f"no [it{iteration}] table in the recipe")
        return config


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe TOML; relative paths are taken from its folder."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"recipe not found: {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    for override in overrides:
        apply_override(data, override)
    try:
        return build(Recipe, data, base=path.resolve().parent, where="")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set a dotted `key=value` in the nested table; the value is parsed as TOML if it can be."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. mfcc.k=50")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.strip().split(".")
    table = data
    for index, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: index + 1])} is no table")
        # keys under a free-form table (training overrides) keep their dots
        if part == "overrides":
            table[".".join(parts[index + 1 :])] = value
            return
    table[parts[-1]] = value


def build(cls: type, table: Mapping[str, Any], *, base: Path, where: str) -> Any:
    """Make dataclass `cls` from a TOML table, strictly: unknown keys and wrong types are errors."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where or 'recipe'}] must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {_dotted(where, close[0])!r}?" if close else ""
            valid = ", ".join(fields)
            raise ConfigError(f"unknown key {_dotted(where, key)!r}{hint} (valid: {valid})")
    values = {
        key: _convert(hints[key], value, base=base, where=_dotted(where, key))
        for key, value in table.items()
    }
    missing = [
        _dotted(where, f.name)
        for f in fields.values()
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}")
    return cls(**values)


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(hint: Any, value: Any, *, base: Path, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [arg for arg in args if arg is not type(None)]
        return _convert(inner[0], value, base=base, where=where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, base=base, where=where)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(map(repr, args))}")
        return value
    if hint is Path:
        _expect(value, str, where)
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if origin is list:
        _expect(value, list, where)
        return [
            _convert(args[0], item, base=base, where=f"{where}[{i}]")
            for i, item in enumerate(value)
        ]
    if origin is dict:
        _expect(value, dict, where)
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        _expect(value, hint, where)
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # a bug in the recipe schema


def _expect(value: Any, kind: type, where: str) -> None:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where} = {value!r}: expected {kind.__name__}")


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


def dump_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the resolved recipe (tables, scalars, lists)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) or _is_inline(k)}
    tables = {k: v for k, v in data.items() if k not in scalars}
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*path, key], lines)


def _is_inline(key: str) -> bool:
    return key == "overrides"


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
