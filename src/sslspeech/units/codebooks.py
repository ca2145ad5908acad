"""Units straight from a SpidR/DinoSR student: its codebook predictions, no k-means.

A model with K codebooks has one per layer among its last K transformer layers (1-based layers
L - K + 1 .. L): SpidR's head j reads student layer L - K + 1 + j, DinoSR's heads all read the
final output and head j predicts the codebook of teacher layer L - K + 1 + j. The units of a
layer are the argmax of that head's posteriorgram (its codeword probabilities).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from sslspeech.errors import ConfigError

CODEBOOK_MODELS = ("spidr", "dinosr")

K = TypeVar("K")


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
    """The SpidR/DinoSR model of `checkpoint` on `device` (eval, with the CPU inference fast
    paths), checked for `layers`."""
    from sslspeech.models import load_model
    from sslspeech.models.cpu_inference import optimize_for_cpu_inference

    model: Any = load_model(checkpoint)
    check_codebook_layers(model, layers, checkpoint)
    return optimize_for_cpu_inference(model.to(torch.device(device)).eval())


@torch.inference_mode()
def batched_codebook_posteriors(
    model: Any,
    waveforms: Sequence[np.ndarray],
    layers: Sequence[int],
    *,
    batch_samples: int | None = None,
) -> Iterator[tuple[int, dict[int, Tensor]]]:
    """(index, layer -> [frame, codeword] float32 probabilities on the model's device) for every
    mono 16 kHz waveform, in length-sorted batches of at most `batch_samples` padded samples
    (`encoded_batches`); each equals the utterance's own `get_codebooks`.

    Waveforms are standardized first when the checkpoint says so; audio shorter than one frame
    gives 0 frames (those come first).
    """
    from sslspeech.data.audio import standardize
    from sslspeech.features.batching import encoded_batches

    device = next(model.parameters()).device
    tensors = [
        torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(device) for w in waveforms
    ]
    if model.config.normalize_input:
        tensors = [standardize(x) for x in tensors]
    heads = torch.tensor([layer - codebook_layers(model)[0] for layer in layers], device=device)
    empty = torch.zeros(0, model.config.codebook_size, device=device)
    for batch in encoded_batches(model, tensors, batch_samples=batch_samples, device=device):
        if batch.out is None:
            for index in batch.rows:
                yield index, dict.fromkeys(layers, empty)
            continue
        frames = batch.valid_frames().to(device)
        probabilities = model.head_probabilities(batch.out, frames)[heads]
        for index, rows in zip(batch.rows, probabilities.split(batch.frames, 1), strict=True):
            yield index, dict(zip(layers, rows.unbind(0), strict=True))


def stream_codebook_posteriors(
    model: Any,
    audio: Iterable[tuple[K, np.ndarray]],
    layers: Sequence[int],
    *,
    batch_samples: int | None = None,
) -> Iterator[tuple[K, dict[int, Tensor]]]:
    """(key, posteriors as `batched_codebook_posteriors`) for every (key, waveform) of `audio`,
    in its order: loaded in windows of `WINDOW_BATCHES` batches, sorted by length within each
    (what is in memory at once)."""
    from sslspeech.features.batching import WINDOW_BATCHES, default_batch_samples, windows

    device = next(model.parameters()).device
    budget = default_batch_samples(device) if batch_samples is None else batch_samples
    for window in windows(audio, lambda item: len(item[1]), WINDOW_BATCHES * budget):
        waveforms = [wav for _, wav in window]
        found = dict(batched_codebook_posteriors(model, waveforms, layers, batch_samples=budget))
        for index, (key, _) in enumerate(window):
            yield key, found[index]
