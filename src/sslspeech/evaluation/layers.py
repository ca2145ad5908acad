"""ABX of every layer of a model: layer features of the item file's audio, kept in memory."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import ConfigError, DataError
from sslspeech.evaluation.abx import AbxResult, Context, Speaker, abx_result
from sslspeech.evaluation.items import Items, read_items

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def model_frame_rate(model: Any) -> Decimal:
    """Frames per second of a model's conv feature extractor (16 kHz / total stride)."""
    stride = math.prod(int(s) for _, _, s in model.config.extractor_conv_layers)
    return Decimal(16000) / Decimal(stride)


def find_audio(directory: str | os.PathLike[str], fileids: Sequence[str]) -> dict[str, Path]:
    """fileid -> audio file `<fileid>.<wav|flac|ogg|mp3>` found anywhere under `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such audio directory")
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.stem not in found:
            found[path.stem] = path
    missing = [fileid for fileid in dict.fromkeys(fileids) if fileid not in found]
    if missing:
        raise DataError(
            f"{directory}: no audio for {len(missing)} file(s) of the item file (first: "
            f"{', '.join(missing[:5])}); expected <fileid>{'|'.join(AUDIO_SUFFIXES)}"
        )
    return {fileid: found[fileid] for fileid in dict.fromkeys(fileids)}


def layer_features(
    model: Any,
    audio: dict[str, Path],
    layers: Sequence[int],
    *,
    before_residual: bool = True,
    device: str | torch.device | None = None,
    batch_samples: int | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """layer -> fileid -> (T, D) float32 features (1-based layers), the files in length-sorted
    batches of `batch_samples` padded samples (`sslspeech.features.batching`).

    The waveform is standardized first when the checkpoint says so (`config.normalize_input`).
    `model` is put in eval mode and given the CPU inference fast paths (in place).
    """
    from sslspeech.data.audio import load_audio, standardize
    from sslspeech.features.batching import batched_layers
    from sslspeech.models.cpu_inference import optimize_for_cpu_inference

    device = torch.device(device) if device is not None else torch.device("cpu")
    model = optimize_for_cpu_inference(model.to(device).eval())
    fileids = list(audio)
    waveforms = [torch.from_numpy(load_audio(path)) for path in audio.values()]
    if model.config.normalize_input:
        waveforms = [standardize(wav) for wav in waveforms]
    arrays: dict[int, list[np.ndarray]] = {layer: [np.empty(0)] * len(fileids) for layer in layers}
    for index, outputs in batched_layers(
        model,
        waveforms,
        layers,
        before_residual=before_residual,
        batch_samples=batch_samples,
        device=device,
    ):
        for layer, features in zip(layers, outputs, strict=True):
            arrays[layer][index] = features.float().cpu().numpy()
    return {layer: dict(zip(fileids, found, strict=True)) for layer, found in arrays.items()}


def abx_layers(
    item: str | os.PathLike[str] | Items,
    checkpoint: str | os.PathLike[str],
    audio_dir: str | os.PathLike[str],
    layers: Sequence[int] | None = None,
    *,
    frequency: int | str | Decimal | None = None,
    speaker: Speaker = "within",
    context: Context = "within",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    before_residual: bool = True,
    device: str | torch.device | None = None,
    batch_samples: int | None = None,
) -> dict[int, AbxResult]:
    """ABX of the given layers (default: all) of a checkpoint on an item file's audio.

    `frequency` defaults to the model's frame rate (50 Hz for the HuBERT conv stack); the
    layers are computed in batches of `batch_samples` padded samples (see `layer_features`).
    """
    from sslspeech.models import load_model

    items = item if isinstance(item, Items) else read_items(item)
    model: Any = load_model(checkpoint)
    num_layers = int(model.num_layers)
    layers = list(range(1, num_layers + 1)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 1 <= layer <= num_layers]
    if bad:
        raise ConfigError(f"{checkpoint} has layers 1..{num_layers}; got {bad} (1-based)")
    rate = model_frame_rate(model) if frequency is None else frequency
    audio = find_audio(audio_dir, items.fileids)
    features = layer_features(
        model,
        audio,
        layers,
        before_residual=before_residual,
        device=device,
        batch_samples=batch_samples,
    )
    return {
        layer: abx_result(
            items,
            features[layer],
            rate,
            speaker=speaker,
            context=context,
            max_size_group=max_size_group,
            max_x_across=max_x_across,
            seed=seed,
            device=device,
        )
        for layer in layers
    }
