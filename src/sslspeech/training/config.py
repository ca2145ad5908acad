"""Training configuration: one frozen dataclass per part, read from TOML, overridden with
dotted `section.key=value` pairs, checked strictly, dumped back as TOML in the run directory.

Merge order: dataclass defaults -> TOML file -> overrides. Errors come in a fixed order: every
unknown key first (with the closest valid key), then missing required keys, then values.
Field docstrings give the fairseq name where one exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import ConfigError

MODEL_TYPES = ("hubert_pretrain", "spidr", "dinosr")
_MODEL_CONFIG_CLASSES = {
    "hubert_pretrain": ("sslspeech.models.configs", "HuBERTPretrainConfig"),
    "spidr": ("sslspeech.models.spidr", "SpidRConfig"),
    "dinosr": ("sslspeech.models.dinosr", "DinoSRConfig"),
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Where the run lives, how long it runs, what it starts from."""

    workdir: str
    """Run directory: config.toml, metrics.jsonl, checkpoints/ (fairseq `checkpoint.save_dir`)."""
    seed: int = 1337
    """Seed of every random generator (fairseq `common.seed`)."""
    max_steps: int = 400_000
    """Optimizer steps to train for (fairseq `optimization.max_update`)."""
    validate_every: int = 10_000
    """Validate every N steps when `data.val_manifest` is set, 0 = never in the loop (fairseq
    `dataset.validate_interval_updates`)."""
    validation: Literal["inline", "job", "none"] = "inline"
    """"inline": validate in the loop; "job": a separate job per checkpoint (SLURM launcher);
    "none": only `sslspeech validate` afterwards."""
    init_from: str | None = None
    """Checkpoint whose model weights start a new run (a rerun resumes from last.pt instead)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """"auto": CUDA when available, else CPU."""
    compile: bool = False
    """Compile the model with torch.compile."""

    def __post_init__(self) -> None:
        _check_positive(self, "max_steps")
        _check_non_negative(self, "validate_every")
        if not self.workdir:
            raise ConfigError("run.workdir is empty: pass --workdir DIR or run.workdir=DIR")


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """When checkpoints are written and which are kept."""

    save_every: int = 25_000
    """Save `step_N.pt` every N steps (fairseq `checkpoint.save_interval_updates`)."""
    keep_last: int = 1
    """Keep the N most recent step checkpoints, -1 = all (fairseq `keep_interval_updates`)."""
    keep_every: int = 0
    """Also keep forever every checkpoint whose step is a multiple of N, 0 = none."""
    best_metric: str = "loss"
    """Validation metric that selects `best.pt` (lower is better)."""

    def __post_init__(self) -> None:
        _check_positive(self, "save_every")
        _check_non_negative(self, "keep_every")
        if self.keep_last == 0 or self.keep_last < -1:
            raise ConfigError(
                f"checkpoint.keep_last must be >= 1 or -1 (keep all); got {self.keep_last}"
            )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Training and validation audio, crops and batches."""

    manifest: str
    """Training manifest (CSV, fairseq TSV or JSONL; with a `units` column for HuBERT)
    (fairseq `task.data`)."""
    val_manifest: str | None = None
    """Validation manifest, same format (fairseq `dataset.valid_subset`)."""
    max_sample_size: int = 250_000
    """Longer utterances are cropped to this many samples (fairseq `task.max_sample_size`)."""
    min_sample_size: int = 32_000
    """Shorter utterances are dropped (fairseq `task.min_sample_size`)."""
    max_batch_samples: int = 1_400_000
    """Audio samples per batch on each rank, padding included (fairseq `dataset.max_tokens`)."""
    random_crop: bool = True
    """Crop at a random offset instead of the start (fairseq `task.random_crop`)."""
    num_buckets: int = 50
    """Length buckets of the batch sampler: batches hold utterances of similar length, so
    little is padded or cropped (see `batching`)."""
    batching: Literal["pad", "crop"] = "pad"
    """"pad": every utterance padded to the batch's longest; "crop": cut to the batch's
    shortest at a random offset (fairseq `pad_audio=false`, spidr `enable_padding=false`): no
    padding, so attention takes its unmasked (Flash) path, at the cost of the cropped audio."""
    normalize: bool = False
    """Standardize each waveform to zero mean, unit variance (fairseq `task.normalize`)."""
    num_workers: int = 6
    """DataLoader worker processes per rank (fairseq `dataset.num_workers`)."""

    def __post_init__(self) -> None:
        _check_positive(self, "max_sample_size")
        _check_non_negative(self, "min_sample_size")
        _check_positive(self, "max_batch_samples")
        _check_positive(self, "num_buckets")
        _check_non_negative(self, "num_workers")
        if self.min_sample_size > self.max_sample_size:
            raise ConfigError(
                f"data.min_sample_size ({self.min_sample_size}) is larger than "
                f"data.max_sample_size ({self.max_sample_size}); lower one of them"
            )
        if self.max_batch_samples < self.max_sample_size:
            raise ConfigError(
                f"data.max_batch_samples ({self.max_batch_samples}) cannot hold one utterance of "
                f"data.max_sample_size ({self.max_sample_size}); raise it or lower the crop"
            )


@dataclass(frozen=True, kw_only=True)
class MaskingConfig:
    """Span masking of the frame sequence (computed in the collate function)."""

    mask_prob: float = 0.8
    """Share of frames that start a masked span (fairseq `model.mask_prob`)."""
    mask_length: int = 10
    """Frames per masked span (fairseq `model.mask_length`)."""
    min_masks: int = 2
    """Minimum spans per utterance (fairseq `compute_mask_indices(min_masks=2)`)."""
    require_same_masks: bool = True
    """Every row of a batch gets as many masked frames as its sparsest row (fairseq default;
    SpidR's collator always does)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ConfigError(f"masking.mask_prob must be in [0, 1]; got {self.mask_prob}")
        _check_positive(self, "mask_length")
        _check_non_negative(self, "min_masks")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which model to train; every other key of `[model]` is a field of that model's config
    (see `sslspeech.models.configs`), defaults are the model's (base size)."""

    type: Literal["hubert_pretrain", "spidr", "dinosr"]
    """Model family: "hubert_pretrain", "spidr" or "dinosr"."""
    options: dict[str, Any] = field(default_factory=dict)
    """Fields of the model config, checked by that config class."""

    def build(self) -> Any:
        """The model's own config object (e.g. `SpidRConfig`)."""
        return model_config_class(self.type)(**self.options)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW, gradient clipping, accumulation, precision."""

    lr: float = 5e-4
    """Peak learning rate (fairseq `optimization.lr`)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas (fairseq `optimizer.adam_betas`)."""
    eps: float = 1e-6
    """AdamW epsilon (fairseq `optimizer.adam_eps`)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (fairseq `optimizer.weight_decay`)."""
    decay_norms_and_biases: bool = True
    """Apply weight decay to norm weights and biases too (fairseq and spidr do)."""
    clip_norm: float = 10.0
    """Clip the global gradient norm to this value, 0 = no clipping (fairseq
    `optimization.clip_norm`; spidr `max_norm`)."""
    accumulation: int = 1
    """Micro-batches per optimizer step on each rank (fairseq `optimization.update_freq`)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Autocast precision; float16 uses a gradient scaler (fairseq `common.fp16`)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0; got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1); got {self.betas}")
        _check_positive(self, "eps")
        _check_non_negative(self, "weight_decay")
        _check_non_negative(self, "clip_norm")
        _check_positive(self, "accumulation")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Learning-rate schedule over `run.max_steps` steps; the rate is lr * a scale."""

    name: Literal["polynomial", "cosine", "tristage", "constant"] = "polynomial"
    """"polynomial": linear warmup then polynomial decay to `final_lr_scale` at max_steps
    (fairseq `polynomial_decay`); "cosine": warmup then cosine; "tristage": warmup, hold,
    exponential decay over `decay_steps` (fairseq `tri_stage`, spidr); "constant": warmup, hold."""
    warmup_steps: int = 32_000
    """Linear warmup from `init_lr_scale` to 1 (fairseq `lr_scheduler.warmup_updates`)."""
    hold_steps: int = 0
    """Tri-stage: steps at the peak after warmup."""
    decay_steps: int = 0
    """Tri-stage: steps of exponential decay after the hold (then the rate stays at the end)."""
    init_lr_scale: float = 0.0
    """Scale at step 0 (fairseq polynomial: 0; spidr: 0.01)."""
    final_lr_scale: float = 0.0
    """Scale at the end of the decay (fairseq `end_learning_rate` / lr: 0; spidr: 0.01)."""
    power: float = 1.0
    """Polynomial decay power, 1 = linear (fairseq `lr_scheduler.power`)."""

    def __post_init__(self) -> None:
        for name in ("warmup_steps", "hold_steps", "decay_steps"):
            _check_non_negative(self, name)
        for name in ("init_lr_scale", "final_lr_scale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"schedule.{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.name == "tristage" and self.final_lr_scale <= 0 and self.decay_steps > 0:
            raise ConfigError(
                "schedule.final_lr_scale must be > 0 for the exponential tri-stage decay; "
                "spidr uses 0.01"
            )
        _check_positive(self, "power")


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """Data parallelism over torch.distributed."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """"auto": NCCL on CUDA, gloo on CPU (fairseq `distributed_backend`)."""
    find_unused_parameters: bool | None = None
    """DDP's flag; None: on when layers can be dropped (layer_drop > 0) (fairseq
    `find_unused_parameters`)."""
    timeout_minutes: int = 30
    """Collective timeout."""

    def __post_init__(self) -> None:
        _check_positive(self, "timeout_minutes")


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """Metrics: JSONL always; tqdm on a terminal; wandb / TensorBoard when asked."""

    log_every: int = 200
    """Write a metrics line every N steps (fairseq `common.log_interval`)."""
    progress: bool = True
    """tqdm progress bar when stderr is a terminal."""
    wandb_project: str | None = None
    """Also log to this wandb project (needs `wandb` installed)."""
    wandb_mode: Literal["online", "offline"] = "offline"
    """wandb mode."""
    tensorboard: bool = False
    """Also write TensorBoard events under WORKDIR/tensorboard (fairseq `tensorboard_logdir`)."""

    def __post_init__(self) -> None:
        _check_positive(self, "log_every")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run needs; `config.toml` in the run directory holds it."""

    run: RunConfig
    data: DataConfig
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        for name, (section, value) in self._model_fields_from_sections().items():
            if name in self.model.options and self.model.options[name] != value:
                raise ConfigError(
                    f"model.{name} ({self.model.options[name]}) differs from {section} "
                    f"({value}); set {section} only"
                )

    def _model_fields_from_sections(self) -> dict[str, tuple[str, Any]]:
        """Model-config fields that other sections decide: the training masks, and whether
        the waveforms are standardized (recorded so that feature extraction does the same)."""
        return {
            "mask_prob": ("masking.mask_prob", self.masking.mask_prob),
            "mask_length": ("masking.mask_length", self.masking.mask_length),
            "normalize_input": ("data.normalize", self.data.normalize),
        }

    def model_config(self) -> Any:
        """The model's config object; its mask and `normalize_input` fields (when it has them)
        come from `[masking]` and `data.normalize`."""
        config = self.model.build()
        synced = {
            name: value
            for name, (_, value) in self._model_fields_from_sections().items()
            if hasattr(config, name)
        }
        return config.replace(**synced) if synced else config

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain mapping, `[model]` flattened (type + options)."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            if name == "model":
                out[name] = {"type": section.type, **section.options}
            else:
                out[name] = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `section.key` changes, e.g. `replace(**{"run.max_steps": 10})`."""
        overrides = [f"{key}={_format_override(value)}" for key, value in changes.items()]
        return resolve_config(self.to_dict(), overrides)


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "masking": MaskingConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "checkpoint": CheckpointConfig,
    "distributed": DistributedConfig,
    "logging": LoggingConfig,
}


def model_config_class(model_type: str) -> type:
    """The config dataclass of a model type (e.g. `sslspeech.models.spidr.SpidRConfig`)."""
    try:
        module, name = _MODEL_CONFIG_CLASSES[model_type]
    except KeyError:
        raise ConfigError(
            f"model.type must be one of {list(MODEL_TYPES)}; got {model_type!r}"
            + _suggest(model_type, MODEL_TYPES)
        ) from None
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults -> TOML file (optional) -> `section.key=value` overrides, strictly checked."""
    data: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML: {error}") from None
        return resolve_config(data, overrides, source=source, lines=_key_lines(text))
    return resolve_config(data, overrides, source=source)


def resolve_config(
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    source: str = "config",
    lines: Mapping[tuple[str, str], int] | None = None,
) -> TrainConfig:
    """Build a TrainConfig from a nested mapping (parsed TOML) and dotted overrides; `lines`
    (section, key) -> line number lets errors point into the file."""
    parsed = [_split_override(item) for item in overrides]
    _check_keys(data, parsed, source, lines or {})
    values = _merge(data, parsed, source)
    return _build(values)


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, key) -> line number of a simple TOML file (top-level keys: section "")."""
    found: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            section = stripped[1 : stripped.index("]")].strip()
        elif "=" in stripped and not stripped.startswith("#"):
            found.setdefault((section, stripped.split("=", 1)[0].strip().strip("\"'")), number)
    return found


def _split_override(item: str) -> tuple[str, str, str]:
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4")
    return section, name, value.strip()


def _section_fields(section: str, model_type: str | None) -> dict[str, Any]:
    """Valid keys of a section and their types."""
    if section == "model":
        hints: dict[str, Any] = {"type": str}
        if model_type in MODEL_TYPES:
            cls = model_config_class(model_type)
            hints.update(typing.get_type_hints(cls))
            hints = {k: v for k, v in hints.items() if k in _field_names(cls) or k == "type"}
        return hints
    cls = SECTIONS[section]
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in _field_names(cls)}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _model_type(data: Mapping[str, Any], parsed: Sequence[tuple[str, str, str]]) -> str | None:
    model_type = data.get("model", {}).get("type") if isinstance(data.get("model"), dict) else None
    for section, name, value in parsed:
        if (section, name) == ("model", "type"):
            model_type = value.strip("\"'")
    return model_type


def _check_keys(
    data: Mapping[str, Any],
    parsed: Sequence[tuple[str, str, str]],
    source: str,
    lines: Mapping[tuple[str, str], int],
) -> None:
    """Every unknown section or key, each with the closest valid one, in one error."""
    model_type = _model_type(data, parsed)
    every_key = [
        f"{section}.{name}" for section in SECTIONS for name in _section_fields(section, model_type)
    ]

    def where(section: str, name: str | None) -> str:
        line = lines.get(("", section) if name is None else (section, name))
        return f"{source}:{line}" if line else source

    problems: list[str] = []
    keys = [
        (section, name, where(section, name))
        for section, table in data.items()
        for name in _names(table)
    ]
    keys += [(section, name, "command line") for section, name, _ in parsed]
    for section, name, place in keys:
        if name is None:  # a value outside any [section]
            hint = _suggest_key(f".{section}", every_key)
            problems.append(f"{place}: key {section!r} is outside any [section]{hint}")
        elif section not in SECTIONS:
            problems.append(
                f"{place}: unknown section [{section}]" + _suggest(section, list(SECTIONS))
            )
        elif section == "model" and model_type not in MODEL_TYPES:
            continue  # the model type itself is wrong: reported below
        elif name not in _section_fields(section, model_type):
            dotted = f"{section}.{name}"
            problems.append(f"{place}: unknown key {dotted!r}{_suggest_key(dotted, every_key)}")
    if model_type is not None and model_type not in MODEL_TYPES:
        problems.append(
            f"{source}: model.type must be one of {list(MODEL_TYPES)}; got {model_type!r}"
            + _suggest(model_type, MODEL_TYPES)
        )
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def _suggest_key(dotted: str, every_key: list[str]) -> str:
    """Closest key of the same section, else the same name in another section, else any."""
    section, name = dotted.split(".", 1)
    same = [key for key in every_key if key.startswith(f"{section}.")]
    hint = _suggest(dotted, same) or _suggest(name, [k.split(".", 1)[1] for k in same], section)
    if hint:
        return hint
    elsewhere = [key for key in every_key if key.split(".", 1)[1] == name]
    return f"; did you mean {elsewhere[0]!r}?" if elsewhere else _suggest(dotted, every_key)


def _names(table: Any) -> Iterable[str | None]:
    if isinstance(table, dict):
        return list(table)
    return [None]


def _suggest(key: str, valid: Iterable[str], prefix: str = "") -> str:
    matches = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    if not matches:
        return ""
    match = f"{prefix}.{matches[0]}" if prefix else matches[0]
    return f"; did you mean {match!r}?"


def _merge(
    data: Mapping[str, Any], parsed: Sequence[tuple[str, str, str]], source: str
) -> dict[str, dict[str, Any]]:
    """Typed values per section (TOML values checked, override strings parsed by type)."""
    model_type = _model_type(data, parsed)
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {table!r}")
        hints = _section_fields(section, model_type)
        for name, value in table.items():
            values[section][name] = coerce(value, hints[name], f"{section}.{name}", source)
    for section, name, text in parsed:
        hint = _section_fields(section, model_type)[name]
        values[section][name] = parse_value(text, hint, f"{section}.{name}")
    return values


def _build(values: dict[str, dict[str, Any]]) -> TrainConfig:
    missing = [
        f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.name != "options" and _required(f) and f.name not in values[section]
    ]
    if missing:
        raise ConfigError(
            "missing required key(s): "
            + ", ".join(missing)
            + "; set them in the TOML file or on the command line (e.g. "
            + "--workdir DIR, --manifest FILE, model.type=spidr)"
        )
    model_values = dict(values.pop("model"))
    sections = {name: SECTIONS[name](**fields) for name, fields in values.items()}
    model = ModelConfig(type=model_values.pop("type"), options=model_values)
    try:
        model.build()  # the model config validates its own values
    except ConfigError as error:
        raise ConfigError(f"[model] ({model.type}): {error}") from None
    return TrainConfig(model=model, **sections)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# ----------------------------------------------------------------------------- typed values


def parse_value(text: str, hint: Any, key: str) -> Any:
    """Parse a command-line value by the field's type (strings need no quotes)."""
    options = _union_members(hint)
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    if _accepts_plain_string(options) and not text.startswith(("[", '"', "'")):
        return coerce(text, hint, key, "command line")
    if bool in options and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"command line: {key}={text!r}: expected {_type_name(hint)}") from None
    return coerce(value, hint, key, "command line")


def _accepts_plain_string(options: Sequence[Any]) -> bool:
    return any(
        option is str
        or (
            typing.get_origin(option) is Literal
            and all(isinstance(a, str) for a in option.__args__)
        )
        for option in options
    )


def _union_members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check `value` against a type hint; ints become floats and lists become tuples."""
    options = _union_members(hint)
    if len(options) > 1:
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key, source)
            except ConfigError:
                continue
        raise _type_error(value, hint, key, source)
    return _coerce_single(value, hint, key, source)


_SCALARS: dict[Any, Any] = {
    bool: lambda v: v if isinstance(v, bool) else None,
    int: lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
    float: lambda v: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
    str: lambda v: v if isinstance(v, str) else None,
}


def _coerce_single(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or (hint is type(None) and value is None):
        return value
    if origin is Literal:
        if value in hint.__args__:
            return value
        raise ConfigError(
            f"{source}: {key} must be one of {list(hint.__args__)}; got {value!r}"
            + _suggest(str(value), [str(a) for a in hint.__args__])
        )
    if origin in (tuple, list):
        return _coerce_sequence(value, hint, key, source)
    if hint in _SCALARS:
        converted = _SCALARS[hint](value)
        if converted is not None:
            return converted
    raise _type_error(value, hint, key, source)


def _coerce_sequence(value: Any, hint: Any, key: str, source: str) -> Any:
    if not isinstance(value, list | tuple):
        raise _type_error(value, hint, key, source)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return [coerce(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{source}: {key} must have {len(args)} items; got {list(value)!r}")
    return tuple(
        coerce(item, arg, f"{key}[{i}]", source)
        for i, (arg, item) in enumerate(zip(args, value, strict=True))
    )


def _type_error(value: Any, hint: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {_type_name(hint)}; got {value!r}")


def _type_name(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None):
        return "none"
    options = _union_members(hint)
    if len(options) > 1:
        return " or ".join(_type_name(option) for option in options)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return f"one of {list(hint.__args__)}"
    if origin in (tuple, list):
        return f"a list like {_example(hint)}"
    return getattr(hint, "__name__", str(hint))


def _example(hint: Any) -> str:
    args = typing.get_args(hint)
    samples = {int: "1", float: "0.5", str: '"a"', bool: "true"}
    if typing.get_origin(hint) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return "[" + ", ".join(samples.get(a, "…") for a in args) + "]"
    inner = args[0] if args else Any
    item = _example(inner) if typing.get_origin(inner) in (tuple, list) else samples.get(inner, "…")
    return f"[{item}, …]"


def _format_override(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    return format_toml_value(value)


# ----------------------------------------------------------------------------- TOML output


def format_toml_value(value: Any) -> str:
    """One TOML value: bool, int, float, string, or (nested) list/tuple of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_toml_value(item) for item in value) + "]"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def _toml_string(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def dump_toml(config: TrainConfig) -> str:
    """The resolved config as TOML text (None values are left out: they are the defaults)."""
    lines = ["# Resolved sslspeech training config: defaults + TOML file + overrides."]
    for section, table in config.to_dict().items():
        lines.append(f"\n[{section}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {key} = none")
            else:
                lines.append(f"{key} = {format_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `dump_toml(config)` atomically."""
    from sslspeech.utils.fileio import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(dump_toml(config))


# ----------------------------------------------------------------------------- checks


def check_paths(config: TrainConfig) -> None:
    """Paths the run reads must exist (checked after keys and values, before any work)."""
    problems = []
    for key, value in (
        ("data.manifest", config.data.manifest),
        ("data.val_manifest", config.data.val_manifest),
        ("run.init_from", config.run.init_from),
    ):
        if value is not None and not Path(value).is_file():
            problems.append(f"{key}: no such file {value!r}")
    if problems:
        raise ConfigError("; ".join(problems) + " (fix the path or pass --manifest/--val-manifest)")


def _check_positive(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if not value > 0:
        raise ConfigError(f"{_section_of(obj)}.{name} must be > 0; got {value}")


def _check_non_negative(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if value < 0:
        raise ConfigError(f"{_section_of(obj)}.{name} must be >= 0; got {value}")


def _section_of(obj: Any) -> str:
    for name, cls in SECTIONS.items():
        if isinstance(obj, cls):
            return name
    return type(obj).__name__
