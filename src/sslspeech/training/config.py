"""Training configuration: one frozen dataclass per part, read from TOML, overridden with
dotted `section.key=value` pairs, checked strictly, dumped back as TOML in the run directory.

Merge order: dataclass defaults -> TOML file -> overrides. Errors come in a fixed order: every
unknown key first (with the closest valid key), then missing required keys, then values.
Field docstrings give the fairseq name where one exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import ConfigError, UnknownModelTypeError
from sslspeech.interop.hub import is_remote
from sslspeech.models.registry import TRAINABLE_TYPES as MODEL_TYPES
from sslspeech.models.registry import model_spec
from sslspeech.utils.tomlconfig import (
    Lines,
    Place,
    coerce,
    dump_toml,
    field_types,
    file_place,
    parse_value,
    read_toml,
    required_fields,
    split_override,
    suggest,
)


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
    """Checkpoint that starts a new run (continued pretraining): a file, directory, HF id or
    URL, any format `from_pretrained` reads. The architecture and the encoder weights come from
    it; parts it lacks or that change shape start fresh (`sslspeech.training.init`). A rerun
    resumes from last.pt instead."""
    init_labels_from: str | None = None
    """HuBERT: k-means centroids (`sslspeech kmeans` safetensors) that initialize the label
    embeddings through the final projection (`sslspeech.training.init.label_embeddings`)."""
    init_fresh: tuple[str, ...] = ()
    """Name prefixes of tensors that start fresh although `run.init_from` has them, e.g.
    ["label_embeddings"] for new labels with the same number of clusters."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """"auto": CUDA when available, else CPU."""
    compile: bool = False
    """Compile the model with torch.compile."""
    profile_steps: tuple[int, int] | None = None
    """Record a torch.profiler trace of steps [start, end) into WORKDIR/profile/ (Chrome /
    Perfetto JSON, one file per rank)."""

    def __post_init__(self) -> None:
        _check_positive(self, "max_steps")
        _check_non_negative(self, "validate_every")
        window = self.profile_steps
        if window is not None and not 0 <= window[0] < window[1]:
            raise ConfigError(
                f"run.profile_steps must be [start, end] with 0 <= start < end; got {list(window)}"
            )
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
    """DataLoader worker processes per rank (fairseq `dataset.num_workers`); they live for the
    whole run, across epochs."""
    prefetch_factor: int = 2
    """Batches each DataLoader worker prepares ahead (with `num_workers` > 0)."""

    def __post_init__(self) -> None:
        _check_positive(self, "max_sample_size")
        _check_non_negative(self, "min_sample_size")
        _check_positive(self, "max_batch_samples")
        _check_positive(self, "num_buckets")
        _check_non_negative(self, "num_workers")
        _check_positive(self, "prefetch_factor")
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

    type: str
    """Model family: a trainable type of `sslspeech.models.registry` ("hubert_pretrain",
    "spidr", "dinosr")."""
    options: dict[str, Any] = field(default_factory=dict)
    """Fields of the model config, checked by that config class."""

    def build(self, base: Mapping[str, Any] | None = None) -> Any:
        """The model's own config object (e.g. `SpidRConfig`): the fields of `base` it has
        (e.g. a checkpoint's config), then `options`."""
        cls: Any = model_config_class(self.type)
        if base is None:
            return cls(**self.options)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({**{k: v for k, v in base.items() if k in names}, **self.options})


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
    peak_tflops: float | None = None
    """Peak TFLOP/s of one device at `dtype`, for the logged MFU; None: from the table of
    known GPUs in `sslspeech.training.flops` (no MFU on CPU)."""
    max_nonfinite_steps: int = 5
    """Steps in a row whose loss or gradient norm is not finite that are skipped (no update);
    one more stops the run with an error. float16 overflows, which the gradient scaler skips
    itself, count only when the loss is not finite."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0; got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1); got {self.betas}")
        _check_positive(self, "eps")
        _check_non_negative(self, "weight_decay")
        _check_non_negative(self, "clip_norm")
        _check_positive(self, "accumulation")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"optim.peak_tflops must be > 0; got {self.peak_tflops}")
        _check_non_negative(self, "max_nonfinite_steps")


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
    stop_check_every: int = 10
    """Steps between the all-reduce that tells every rank a stop signal (preemption, time
    limit) arrived; also checked at every checkpoint step."""

    def __post_init__(self) -> None:
        _check_positive(self, "timeout_minutes")
        _check_positive(self, "stop_check_every")


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
    mfu: bool = True
    """Count the model's FLOPs per audio-second once at start (torch's FLOP counter) and log
    `tflops_per_gpu` and `mfu` (with a known GPU's peak or `optim.peak_tflops`)."""

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

    def model_config(self, base: Mapping[str, Any] | None = None) -> Any:
        """The model's config object (`base`: fields to start from, see `ModelConfig.build`);
        its mask and `normalize_input` fields (when it has them) come from `[masking]` and
        `data.normalize`."""
        config = self.model.build(base)
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
        return resolve_config(self.to_dict(), changes=changes, changes_from="replace()")

    def to_toml(self) -> str:
        """The resolved config as TOML text (None values as comments: they are the defaults)."""
        return dump_toml(
            self.to_dict(), "Resolved sslspeech training config: defaults + TOML file + overrides."
        )


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


RESUMABLE_CHANGES = (
    "run.workdir",
    "run.max_steps",
    "run.validate_every",
    "run.validation",
    "run.init_from",
    "run.device",
    "run.compile",
    "data.manifest",
    "data.val_manifest",
    "data.num_workers",
    "optim.max_nonfinite_steps",
    "checkpoint.",
    "distributed.",
    "logging.",
)
"""Keys (or section prefixes) a resumed run may change silently: length, paths, cadence,
logging, where it runs; any other change needs `--apply-config-changes` or `--restart`."""


def config_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Every resolved value (model fields included) that differs, as "key: old -> new",
    except the `RESUMABLE_CHANGES`."""
    before, after = _flat(old), _flat(new)
    return [
        f"{key}: {_shown(before.get(key))} -> {_shown(after.get(key))}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]


def _flat(config: TrainConfig) -> dict[str, Any]:
    """`section.key` -> value; the model's every field, defaults included."""
    tables = {**config.to_dict(), "model": dataclasses.asdict(config.model_config())}
    flat = {
        f"{name}.{key}": value for name, table in tables.items() for key, value in table.items()
    }
    flat["model.type"] = config.model.type
    return flat


def _shown(value: Any) -> str:
    return "none" if value is None else repr(value)


def model_config_class(model_type: str) -> type:
    """The config dataclass of a model type (e.g. `sslspeech.models.spidr.SpidRConfig`)."""
    try:
        config_class: type = model_spec(model_type, trainable=True).config_class
    except UnknownModelTypeError as error:
        raise UnknownModelTypeError(f"model.type: {error}") from None
    return config_class


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Given:
    """One value set outside the TOML file: a command-line override (text) or a change."""

    section: str
    name: str
    value: Any
    place: str
    is_text: bool


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    changes: Mapping[str, Any] | None = None,
    changes_from: str = "changes",
) -> TrainConfig:
    """Defaults -> TOML file (optional) -> `section.key=value` overrides -> `changes` (values
    by dotted key, e.g. a recipe's; errors name `changes_from`), strictly checked."""
    if path is None:
        return resolve_config(
            {}, overrides, source="overrides", changes=changes, changes_from=changes_from
        )
    data, lines = read_toml(path, "config")
    return resolve_config(
        data, overrides, source=str(path), lines=lines, changes=changes, changes_from=changes_from
    )


def resolve_config(
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    source: str = "config",
    lines: Lines | None = None,
    changes: Mapping[str, Any] | None = None,
    changes_from: str = "changes",
) -> TrainConfig:
    """Build a TrainConfig from a nested mapping (parsed TOML), dotted text overrides and
    dotted value changes; `lines` ((section, key) -> line) lets errors point into the file."""
    given = [_split_override(item) for item in overrides]
    given += [
        _Given(*_split_key(key, f"{key}={value!r}"), value, changes_from, False)
        for key, value in (changes or {}).items()
    ]
    _check_keys(data, given, source, lines or {})
    values = _merge(data, given, file_place(source, lines or {}))
    return _build(values)


def _split_override(item: str) -> _Given:
    key, text = split_override(item, shape="section.key=value")
    section, name = _split_key(key, item)
    return _Given(section, name, text, "command line", True)


def _split_key(key: str, item: str) -> tuple[str, str]:
    section, dot, name = key.partition(".")
    if not dot or not section or not name:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4")
    return section, name


def _section_fields(section: str, model_type: str | None) -> dict[str, Any]:
    """Valid keys of a section and their types."""
    if section == "model":
        hints: dict[str, Any] = {"type": str}
        if model_type in MODEL_TYPES:
            hints.update(field_types(model_config_class(model_type)))
        return hints
    return field_types(SECTIONS[section])


def _model_type(data: Mapping[str, Any], given: Sequence[_Given]) -> str | None:
    model_type = data.get("model", {}).get("type") if isinstance(data.get("model"), dict) else None
    for item in given:
        if (item.section, item.name) == ("model", "type"):
            model_type = item.value.strip("\"'") if item.is_text else item.value
    return model_type


def _check_keys(
    data: Mapping[str, Any], given: Sequence[_Given], source: str, lines: Lines
) -> None:
    """Every unknown section or key, each with the closest valid one, in one error."""
    model_type = _model_type(data, given)
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
    keys += [(item.section, item.name, item.place) for item in given]
    for section, name, place in keys:
        if name is None:  # a value outside any [section]
            hint = _suggest_key(f".{section}", every_key)
            problems.append(f"{place}: key {section!r} is outside any [section]{hint}")
        elif section not in SECTIONS:
            problems.append(
                f"{place}: unknown section [{section}]" + suggest(section, list(SECTIONS))
            )
        elif section == "model" and model_type not in MODEL_TYPES:
            continue  # the model type itself is wrong: reported below
        elif name not in _section_fields(section, model_type):
            key = f"{section}.{name}"
            problems.append(f"{place}: unknown key {key!r}{_suggest_key(key, every_key)}")
    if model_type is not None and model_type not in MODEL_TYPES:
        problems.append(
            f"{source}: model.type must be one of {list(MODEL_TYPES)}; got {model_type!r}"
            + suggest(str(model_type), MODEL_TYPES)
        )
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def _suggest_key(key: str, every_key: list[str]) -> str:
    """Closest key of the same section, else the same name in another section, else any."""
    section, name = key.split(".", 1)
    same = [k for k in every_key if k.startswith(f"{section}.")]
    hint = suggest(key, same) or suggest(name, [k.split(".", 1)[1] for k in same], section)
    if hint:
        return hint
    elsewhere = [k for k in every_key if k.split(".", 1)[1] == name]
    return f"; did you mean {elsewhere[0]!r}?" if elsewhere else suggest(key, every_key)


def _names(table: Any) -> Iterable[str | None]:
    if isinstance(table, dict):
        return list(table)
    return [None]


def _merge(
    data: Mapping[str, Any], given: Sequence[_Given], place: Place
) -> dict[str, dict[str, Any]]:
    """Typed values per section (TOML values and changes checked, override texts parsed)."""
    model_type = _model_type(data, given)
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{place(section)}: [{section}] must be a table, got {table!r}")
        hints = _section_fields(section, model_type)
        for name, value in table.items():
            key = f"{section}.{name}"
            values[section][name] = coerce(value, hints[name], key, place(key))
    for item in given:
        hint = _section_fields(item.section, model_type)[item.name]
        key = f"{item.section}.{item.name}"
        read = parse_value if item.is_text else coerce
        values[item.section][item.name] = read(item.value, hint, key, item.place)
    return values


def _build(values: dict[str, dict[str, Any]]) -> TrainConfig:
    missing = [
        f"{section}.{name}"
        for section, cls in SECTIONS.items()
        for name in required_fields(cls)
        if name != "options" and name not in values[section]
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


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write `config.to_toml()` atomically."""
    from sslspeech.utils.fileio import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(config.to_toml())


# ----------------------------------------------------------------------------- checks


def check_paths(config: TrainConfig) -> None:
    """Paths the run reads must exist (checked after keys and values, before any work)."""
    problems = []
    for key, value in (
        ("data.manifest", config.data.manifest),
        ("data.val_manifest", config.data.val_manifest),
        ("run.init_labels_from", config.run.init_labels_from),
    ):
        if value is not None and not Path(value).is_file():
            problems.append(f"{key}: no such file {value!r}")
    init = config.run.init_from
    if init is not None and not Path(init).exists() and not is_remote(init):
        problems.append(f"run.init_from: no such file or directory {init!r}")
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
