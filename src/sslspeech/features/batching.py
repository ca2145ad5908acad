"""Model layers of many utterances in length-sorted, zero-padded batches, each output equal to
the utterance's own forward pass: used by feature extraction, ABX per layer and transcription."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from sslspeech.errors import ConfigError


def default_batch_samples(device: str | torch.device) -> int:
    """Padded samples per batch: 60 s of audio on CPU (HuBERT-base: 1.2x the audio-s per CPU-s
    of one at a time, `bench/extract.py`), 200 s on an accelerator (enough rows to fill it; a
    few GB of activations for HuBERT-base)."""
    seconds = 60 if torch.device(device).type == "cpu" else 200
    return seconds * 16000


def length_batches(lengths: Sequence[int], batch_samples: int) -> list[list[int]]:
    """Indices of `lengths` in batches of similar length, longest first, each holding at most
    `batch_samples` padded samples (rows x longest row); a longer utterance is a batch alone."""
    if batch_samples < 1:
        raise ConfigError(f"batch_samples must be >= 1, got {batch_samples}")
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


@torch.inference_mode()
def batched_layers(
    model: Any,
    waveforms: Sequence[torch.Tensor],
    layers: Sequence[int],
    *,
    before_residual: bool = True,
    batch_samples: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """(index, one [frame, feature] tensor on `device` per 1-based layer of `layers`) for every
    waveform [sample], batch by batch; each equals the utterance's own forward pass.

    The conv stack runs per utterance (its GroupNorm normalizes over the whole row, which
    padding would change); the transformer runs on length-sorted zero-padded batches of at
    most `batch_samples` samples (default: `default_batch_samples(device)`), padding masked.
    Utterances shorter than the receptive field come first, with 0 frames.
    """
    budget = default_batch_samples(device) if batch_samples is None else batch_samples
    encoder = model.encoder
    valid = [i for i, w in enumerate(waveforms) if len(w) >= encoder.config.receptive_field]
    empty = torch.zeros(0, model.config.embed_dim, device=device)
    for index in sorted(set(range(len(waveforms))) - set(valid)):
        yield index, [empty] * len(layers)
    for batch in length_batches([len(waveforms[i]) for i in valid], budget):
        rows = [valid[b] for b in batch]
        projected = [
            encoder.feature_projection(encoder.feature_extractor(waveforms[i].to(device)[None])[0])
            for i in rows
        ]
        counts = [x.shape[1] for x in projected]
        padded = torch.cat([F.pad(x, (0, 0, 0, counts[0] - x.shape[1])) for x in projected])
        out = encoder.transformer(padded, torch.tensor(counts, device=device), max(layers))
        outputs = out.ffn_outputs if before_residual else out.layer_outputs
        for row, (index, length) in enumerate(zip(rows, counts, strict=True)):
            yield index, [outputs[layer - 1][row, :length] for layer in layers]
