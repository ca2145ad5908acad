"""Units straight from a SpidR/DinoSR student: its codebook predictions, no k-means.

A model with K codebooks has one per layer among its last K transformer layers (1-based layers
L - K + 1 .. L): SpidR's head j reads student layer L - K + 1 + j, DinoSR's heads all read the
final output and head j predicts the codebook of teacher layer L - K + 1 + j. The units of a
layer are the argmax of that head's posteriorgram (its codeword probabilities).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sslspeech.errors import ConfigError

CODEBOOK_MODELS = ("spidr", "dinosr")


def codebook_layers(model: Any) -> list[int]:
    """The 1-based transformer layers that have a codebook: the last `num_codebooks`."""
    return list(range(model.num_layers - model.num_codebooks + 1, model.num_layers + 1))


def check_codebook_layers(model: Any, layers: Sequence[int], source: object) -> None:
    """Error unless `model` is SpidR/DinoSR and every layer of `layers` has a codebook."""
    if getattr(model, "model_type", None) not in CODEBOOK_MODELS:
        raise ConfigError(
            f"{source} holds a {getattr(model, 'model_type', type(model).__name__)!r} model; "
            "codebook units need a SpidR or DinoSR checkpoint (for other models extract "
            "features, fit k-means and run `transcribe FEATURES KMEANS OUT`)"
        )
    have = codebook_layers(model)
    bad = [layer for layer in layers if layer not in have]
    if bad:
        raise ConfigError(
            f"{source}: layer(s) {bad} have no codebook; this {model.model_type} model has "
            f"codebooks at layers {have[0]}..{have[-1]} (1-based, the last {len(have)} of "
            f"{model.num_layers})"
        )


def load_codebook_model(
    checkpoint: str | os.PathLike[str], layers: Sequence[int], device: str | torch.device = "cpu"
) -> Any:
    """The SpidR/DinoSR model of `checkpoint` on `device` (eval), checked for `layers`."""
    from sslspeech.models import load_model

    model: Any = load_model(checkpoint)
    check_codebook_layers(model, layers, checkpoint)
    return model.to(torch.device(device)).eval()


@torch.inference_mode()
def codebook_posteriors(
    model: Any, waveform: np.ndarray, layers: Sequence[int]
) -> dict[int, Tensor]:
    """layer -> [frame, codeword] float32 probabilities (CPU) of one mono 16 kHz waveform.

    The waveform is standardized first when the checkpoint says so; audio shorter than one
    frame gives 0 frames.
    """
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).to(device)
    if int(model.frame_lengths(torch.tensor([x.shape[0]]))[0]) == 0:
        empty = torch.zeros(0, model.config.codebook_size)
        return {layer: empty for layer in layers}
    if model.config.normalize_input:
        from sslspeech.data.audio import standardize

        x = standardize(x)
    probabilities = model.get_codebooks(x[None])
    first = codebook_layers(model)[0]
    return {layer: probabilities[layer - first][0].float().cpu() for layer in layers}
