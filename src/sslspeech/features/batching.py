"""Model layers of many utterances in length-sorted, zero-padded batches, each output equal to
the utterance's own forward pass: used by feature extraction, ABX per layer and codebook units."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from sslspeech.errors import ConfigError
from sslspeech.models.encoder import TransformerOutput

T = TypeVar("T")

WINDOW_BATCHES = 8  # batches' worth of audio loaded at once: sorting by length needs a choice


def default_batch_samples(device: str | torch.device) -> int:
    """Padded samples per batch: 60 s of audio on CPU (HuBERT-base: 1.2x the audio-s per CPU-s
    of one at a time, `bench/extract.py`), 200 s on an accelerator (enough rows to fill it; a
    few GB of activations for HuBERT-base)."""
    seconds = 60 if torch.device(device).type == "cpu" else 200
    return seconds * 16000


def check_batch_samples(batch_samples: int | None) -> None:
    """Error unless a batch budget is None (the default) or at least one sample."""
    if batch_samples is not None and batch_samples < 1:
        raise ConfigError(f"batch_samples must be >= 1 (--batch-samples), got {batch_samples}")


def windows(items: Iterable[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive `items` in runs whose `size`s add up to `limit` (the last item of a run may
    pass it): what is in memory at once, batched by length within the run."""
    window: list[T] = []
    total = 0
    for item in items:
        window.append(item)
        total += size(item)
        if total >= limit:
            yield window
            window, total = [], 0
    if window:
        yield window


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


class EncodedBatch(NamedTuple):
    """One transformer pass over a length-sorted, zero-padded batch of utterances."""

    rows: list[int]
    """Indices of the utterances (into the waveforms given), longest first."""
    frames: list[int]
    """Valid frames of each row: those of the utterance's own conv stack."""
    out: TransformerOutput | None
    """[row, frame, feature] outputs; None for the batch of utterances shorter than one frame."""

    def valid_frames(self) -> Tensor:
        """Flat indices (CPU) of the valid frames in the [row * frame] flattened outputs, row by
        row (the rows are padded to the longest)."""
        width = max(self.frames, default=0)
        return torch.cat([row * width + torch.arange(n) for row, n in enumerate(self.frames)])


@torch.inference_mode()
def encoded_batches(
    model: Any,
    waveforms: Sequence[torch.Tensor],
    *,
    num_layers: int | None = None,
    batch_samples: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[EncodedBatch]:
    """The encoder (first `num_layers` layers; None: all) over every waveform [sample], in
    batches whose valid frames equal each utterance's own forward pass.

    The conv stack and projection run per utterance (the GroupNorm of the conv stack normalizes
    over the whole row, which padding would change); the transformer runs on length-sorted
    zero-padded batches of at most `batch_samples` samples (default:
    `default_batch_samples(device)`), padding masked. Utterances shorter than the receptive
    field come first, as one batch with 0 frames each and no outputs.
    """
    budget = default_batch_samples(device) if batch_samples is None else batch_samples
    encoder = model.encoder
    valid = [i for i, w in enumerate(waveforms) if len(w) >= encoder.config.receptive_field]
    short = sorted(set(range(len(waveforms))) - set(valid))
    if short:
        yield EncodedBatch(short, [0] * len(short), None)
    for batch in length_batches([len(waveforms[i]) for i in valid], budget):
        rows = [valid[b] for b in batch]
        projected = [
            encoder.feature_projection(encoder.feature_extractor(waveforms[i].to(device)[None])[0])
            for i in rows
        ]
        frames = [x.shape[1] for x in projected]
        padded = torch.cat([F.pad(x, (0, 0, 0, frames[0] - x.shape[1])) for x in projected])
        out = encoder.transformer(padded, torch.tensor(frames, device=device), num_layers)
        yield EncodedBatch(rows, frames, out)


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
    waveform [sample], batch by batch (`encoded_batches`); each equals the utterance's own
    forward pass. Utterances shorter than one frame come first, with 0 frames.
    """
    empty = torch.zeros(0, model.config.embed_dim, device=device)
    for batch in encoded_batches(
        model, waveforms, num_layers=max(layers), batch_samples=batch_samples, device=device
    ):
        if batch.out is None:
            for index in batch.rows:
                yield index, [empty] * len(layers)
            continue
        outputs = batch.out.ffn_outputs if before_residual else batch.out.layer_outputs
        for row, (index, length) in enumerate(zip(batch.rows, batch.frames, strict=True)):
            yield index, [outputs[layer - 1][row, :length] for layer in layers]
