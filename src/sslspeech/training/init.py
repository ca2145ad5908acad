"""Continued pretraining: a new run's model from any checkpoint (`run.init_from`) and HuBERT's
label embeddings from k-means centroids (`run.init_labels_from`).

The architecture (the `EncoderConfig` fields but the dropouts and layer drop) comes from the
source; `[model]` may set every other field (K, label rate, loss weights, codebooks, EMA,
masks, dropouts), and an architecture field it sets must equal the source's. Each tensor of the
new model with the same name and shape in the source is loaded; the others keep their fresh
initialization (a self-distillation teacher starts as a copy of the loaded student), and
source tensors the new model lacks are dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sslspeech.errors import ConfigError
from sslspeech.interop import LoadedCheckpoint, load_checkpoint
from sslspeech.models.configs import EncoderConfig
from sslspeech.models.pretrained import Pretrained
from sslspeech.models.registry import model_class
from sslspeech.units.kmeans import KMeans

log = logging.getLogger(__name__)

ADJUSTABLE_ENCODER_FIELDS = frozenset(
    {"dropout", "attention_dropout", "activation_dropout", "projection_dropout", "layer_drop"}
)
"""Encoder fields a continued run may change; the other encoder fields are the architecture."""
ARCHITECTURE_FIELDS = (
    frozenset(f.name for f in dataclasses.fields(EncoderConfig)) - ADJUSTABLE_ENCODER_FIELDS
)
MIRRORS = {"teacher.": "encoder.transformer."}
"""Self-distillation: a teacher tensor the source lacks starts as the loaded student's."""


@dataclass
class InitReport:
    """What `initialize` did with each tensor."""

    source: str
    loaded: list[str] = field(default_factory=list)
    initialized: dict[str, str] = field(default_factory=dict)
    """Tensor name -> why it was not loaded (or how it was initialized)."""
    dropped: list[str] = field(default_factory=list)

    def table(self) -> str:
        """One line per module (first two name parts) and status, with the tensor count."""
        rows: dict[tuple[str, str, str], int] = {}
        statuses = [
            *(("loaded", name, "") for name in self.loaded),
            *(("initialized", name, why) for name, why in self.initialized.items()),
            *(("dropped", name, "not in the new model") for name in self.dropped),
        ]
        for status, name, note in statuses:
            parts = name.split(".")
            group = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
            rows[status, group, note] = rows.get((status, group, note), 0) + 1
        lines = [
            f"run.init_from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.initialized)} initialized, {len(self.dropped)} dropped",
            f"  {'status':<12} {'tensors':<36} {'count':>5}  note",
        ]
        lines += [
            f"  {status:<12} {group:<36} {count:>5}  {note}".rstrip()
            for (status, group, note), count in rows.items()
        ]
        return "\n".join(lines)


def check_architecture(options: Mapping[str, Any], source: Mapping[str, Any], origin: str) -> None:
    """An architecture field of `[model]` (`options`) must equal the source config's."""
    conflicts = [
        f"model.{key} = {value!r} but the checkpoint has {source[key]!r}"
        for key, value in options.items()
        if key in ARCHITECTURE_FIELDS and key in source and _plain(value) != _plain(source[key])
    ]
    if conflicts:
        raise ConfigError(
            f"run.init_from {origin}: the architecture comes from the checkpoint, and "
            + "; ".join(conflicts)
            + ". Remove these keys from [model] or start from a checkpoint that has them."
        )


def _plain(value: Any) -> Any:
    """Tuples as lists, so that TOML and JSON values compare."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def initialize(
    model: nn.Module, loaded: LoadedCheckpoint, origin: str, fresh: tuple[str, ...] = ()
) -> InitReport:
    """Load every tensor of `loaded` that `model` has with the same shape (in place), but
    those whose name starts with one of `fresh`."""
    report = InitReport(f"{origin} ({loaded.format}, {loaded.model_type})")
    own = model.state_dict()
    for name, tensor in own.items():
        source = loaded.state_dict.get(name)
        if name.startswith(fresh):
            report.initialized[name] = "run.init_fresh"
        elif source is None:
            report.initialized[name] = "not in the checkpoint"
        elif source.shape != tensor.shape:
            report.initialized[name] = f"shape {tuple(source.shape)} -> {tuple(tensor.shape)}"
        else:
            report.loaded.append(name)
    report.dropped = sorted(set(loaded.state_dict) - set(own))
    state = {name: loaded.state_dict[name] for name in report.loaded}
    for name in list(report.initialized):
        for prefix, student in MIRRORS.items():
            twin = student + name.removeprefix(prefix)
            if name.startswith(prefix) and twin in state:
                state[name] = state[twin]
                report.initialized[name] = f"copy of the student's {student}*"
    model.load_state_dict(state, strict=False)
    return report


def init_model(config: Any) -> tuple[Pretrained, InitReport]:
    """The first model of a run with `run.init_from` and/or `run.init_labels_from` (`config`:
    a `TrainConfig`), and what happened to each of its tensors."""
    run, cls = config.run, model_class(config.model.type)
    if run.init_from:
        loaded = load_checkpoint(run.init_from)
        check_architecture(config.model.options, loaded.config, run.init_from)
        model = cls(config.model_config(loaded.config))
        warn_if_normalization_differs(loaded.config, model.config, run.init_from)
        report = initialize(model, loaded, run.init_from, run.init_fresh)
    else:
        model = cls(config.model_config())
        report = InitReport("none", initialized=dict.fromkeys(model.state_dict(), "fresh"))
    if run.init_labels_from:
        centroids = KMeans.load(run.init_labels_from).centroids
        label_embeddings(model, centroids, run.init_labels_from)
        report.loaded = [name for name in report.loaded if name != "label_embeddings"]
        report.initialized["label_embeddings"] = f"projected centroids of {run.init_labels_from}"
    return model, report


def warn_if_normalization_differs(source: Mapping[str, Any], config: Any, origin: str) -> None:
    """The source was trained on standardized waveforms and this run is not (or the reverse)."""
    before, now = source.get("normalize_input"), getattr(config, "normalize_input", None)
    if before is not None and now is not None and before != now:
        log.warning(
            "run.init_from %s was trained with normalize_input=%s, this run has data.normalize=%s;"
            " set data.normalize=%s unless the change is meant",
            origin,
            before,
            now,
            str(before).lower(),
        )


def label_embeddings(model: nn.Module, centroids: Tensor, origin: str) -> None:
    """HuBERT's label embeddings from k-means centroids, through the final projection:
    e[s + k] = W c[k] + b for cluster k (`num_special_labels` s; W, b of `final_proj`), so the
    first logits cos(W x + b, e[j]) / temperature start from the clusters' geometry."""
    cfg = getattr(model, "config", None)
    if not hasattr(model, "label_embeddings") or cfg is None:
        raise ConfigError(
            f"run.init_labels_from {origin}: only HuBERT pretraining (model.type = "
            f"'hubert_pretrain') has label embeddings; a {type(model).__name__} has none"
        )
    if tuple(centroids.shape) != (cfg.num_classes, cfg.embed_dim):
        raise ConfigError(
            f"run.init_labels_from {origin}: centroids of shape {tuple(centroids.shape)}, "
            f"expected (model.num_classes, embed_dim) = ({cfg.num_classes}, {cfg.embed_dim}): "
            "cluster features of the model's width (a layer of the run.init_from model)"
        )
    final_proj: nn.Linear = model.final_proj  # type: ignore[assignment]
    embeddings: Tensor = model.label_embeddings  # type: ignore[assignment]
    with torch.no_grad():
        projected = final_proj(centroids.to(embeddings.dtype))
        embeddings[cfg.num_special_labels :].copy_(projected)
