"""Discrete ABX of the codebook units of every codebook layer of a SpidR/DinoSR model."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import ConfigError
from sslspeech.evaluation.abx import AbxResult, Context, Speaker, abx_result
from sslspeech.evaluation.items import Items, read_items
from sslspeech.units.codebooks import (
    codebook_layers,
    load_codebook_model,
    stream_codebook_posteriors,
)


def _waveforms(audio: dict[str, Path]) -> Iterator[tuple[str, np.ndarray]]:
    from sslspeech.data.audio import load_audio

    for fileid, path in audio.items():
        yield fileid, load_audio(path)


def codebook_units(
    model: Any, audio: dict[str, Path], layers: Sequence[int], batch_samples: int | None = None
) -> dict[int, dict[str, np.ndarray]]:
    """layer -> fileid -> (T,) int32 unit ids, one pass for all layers, in batches of
    `batch_samples` padded samples (`stream_codebook_posteriors`)."""
    out: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in layers}
    posteriors = stream_codebook_posteriors(
        model, _waveforms(audio), layers, batch_samples=batch_samples
    )
    for fileid, found in posteriors:
        for layer, probabilities in found.items():
            out[layer][fileid] = probabilities.argmax(-1).cpu().numpy().astype(np.int32)
    return out


def layer_posteriorgrams(
    model: Any, audio: dict[str, Path], layer: int, batch_samples: int | None = None
) -> dict[str, np.ndarray]:
    """fileid -> (T, V) float32 codeword probabilities of one layer."""
    posteriors = stream_codebook_posteriors(
        model, _waveforms(audio), [layer], batch_samples=batch_samples
    )
    return {fileid: found[layer].cpu().numpy() for fileid, found in posteriors}


def abx_codebook_layers(
    item: str | os.PathLike[str] | Items,
    checkpoint: str | os.PathLike[str],
    audio_dir: str | os.PathLike[str],
    layers: Sequence[int] | None = None,
    *,
    distance: str = "onehot",
    frequency: int | str | Decimal | None = None,
    speaker: Speaker = "within",
    context: Context = "within",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_samples: int | None = None,
) -> dict[int, AbxResult]:
    """ABX of the codebook units of `layers` (default: every codebook layer) of a SpidR/DinoSR
    checkpoint on an item file's audio, the model run in batches of `batch_samples` padded
    samples (default: `default_batch_samples`).

    "onehot" scores the unit ids (those of every layer come from one pass and take 4 bytes a
    frame); "kl_symmetric" scores the posteriorgrams, one layer at a time in memory (one pass
    per layer). `frequency` defaults to the model's frame rate.
    """
    from sslspeech.evaluation.layers import find_audio, model_frame_rate

    if distance not in ("onehot", "kl_symmetric"):
        raise ConfigError(f"codebook units are scored with onehot or kl_symmetric, not {distance}")
    items = item if isinstance(item, Items) else read_items(item)
    model = load_codebook_model(checkpoint, layers or [], device or "cpu")
    layers = codebook_layers(model) if layers is None else list(layers)
    audio = find_audio(audio_dir, items.fileids)
    rate = model_frame_rate(model) if frequency is None else frequency
    settings: dict[str, Any] = {
        "speaker": speaker,
        "context": context,
        "max_size_group": max_size_group,
        "max_x_across": max_x_across,
        "seed": seed,
        "device": device,
        "distance": distance,
    }
    if distance == "onehot":
        units = codebook_units(model, audio, layers, batch_samples)
        return {layer: abx_result(items, units[layer], rate, **settings) for layer in layers}
    return {
        layer: abx_result(
            items, layer_posteriorgrams(model, audio, layer, batch_samples), rate, **settings
        )
        for layer in layers
    }
