"""Collate dataset items into a padded batch with frame-level padding and masks.

Batching: "pad" (every utterance padded to the longest of the batch) or "crop" (every utterance
cut to the shortest of the batch at a random offset, on a label boundary when there are labels:
spidr's and minimal_hubert's batches, which have no padding, so attention takes its unmasked,
Flash path).

Batch keys (a plain dict):

- ``waveforms`` float32 ``(B, N)``, zero-padded; ``lengths`` long ``(B,)`` valid samples;
- ``fileids`` list of str; ``indices`` long ``(B,)`` dataset indices;
- with a `frame_lengths` function (a model's ``frame_lengths(lengths)``): ``frame_lengths`` long
  ``(B,)``, ``padding_mask`` bool ``(B, T)`` (True = padded frame, fairseq's convention),
  ``T = frame_lengths(N)``, and ``padded`` (bool: whether any row has padding frames);
- with labels: ``labels`` long ``(B, L)`` padded with `label_pad` (default -100, the
  ``ignore_index`` of ``F.cross_entropy``) and ``label_lengths`` long ``(B,)``;
- with ``mask_prob > 0``: ``mask`` bool ``(B, T)`` (padding never masked, `masking.compute_mask`),
  ``masked_frames`` and ``unmasked_frames`` long (flat ``b * T + t`` indices, row-major, of the
  masked and of the valid unmasked frames: what a model would need the host for), plus
  ``mask_indices`` long ``(B, K)`` when ``mask_indices=True`` (SpidR's form: sorted masked
  positions, the same count K per row);
- with ``mask_channel_prob > 0``: ``channel_mask`` bool ``(B, C)``, True = channel zeroed.

Masks come from a generator seeded by the items' seeds (see `dataset.item_seed`), so they are
identical in every DataLoader worker layout and after a resume. The collator is the one owner
of the training masks; it also checks on the CPU what a model would check on the device (every
row gives a frame; labels are ids below `num_classes`), so the training forward never syncs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sslspeech.data.masking import compute_mask, mask_to_indices
from sslspeech.errors import ConfigError, DataError

FrameLengths = Callable[[torch.Tensor], torch.Tensor]
BATCHING = ("pad", "crop")


def pad_sequences(sequences: Sequence[torch.Tensor], value: float | int = 0) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into `(B, max length)`, right-padded with `value`."""
    longest = max((len(s) for s in sequences), default=0)
    out = sequences[0].new_full((len(sequences), longest), value)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


class Collator:
    """Callable turning a list of `AudioDataset` items into a batch dict (keys in module doc)."""

    def __init__(
        self,
        frame_lengths: FrameLengths | None = None,
        *,
        mask_prob: float = 0.0,
        mask_length: int = 10,
        min_masks: int = 2,
        require_same_masks: bool = True,
        mask_indices: bool = False,
        mask_channel_prob: float = 0.0,
        mask_channel_length: int = 10,
        num_channels: int | None = None,
        label_pad: int = -100,
        num_classes: int | None = None,
        batching: str = "pad",
        random_crop: bool = True,
        samples_per_label: int = 320,
        seed: int = 0,
    ) -> None:
        if mask_prob > 0 and frame_lengths is None:
            raise ConfigError("masking needs frame_lengths (e.g. model.frame_lengths)")
        if mask_channel_prob > 0 and not num_channels:
            raise ConfigError("channel masking needs num_channels (the model's feature size)")
        if batching not in BATCHING:
            raise ConfigError(f"batching must be one of {list(BATCHING)}; got {batching!r}")
        self.frame_lengths = frame_lengths
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.require_same_masks = require_same_masks or mask_indices
        self.mask_indices = mask_indices
        self.mask_channel_prob, self.mask_channel_length = mask_channel_prob, mask_channel_length
        self.num_channels = num_channels
        self.label_pad, self.num_classes, self.seed = label_pad, num_classes, seed
        self.batching, self.random_crop = batching, random_crop
        self.samples_per_label = samples_per_label

    def _generator(self, items: Sequence[dict[str, Any]], stream: int = 0) -> torch.Generator:
        """A generator of the items' seeds; `stream` > 0 gives an independent one."""
        seeds = [self.seed, *(int(item.get("seed", item.get("index", 0))) for item in items)]
        seeds += [stream] if stream else []
        state = np.random.SeedSequence([s % 2**63 for s in seeds]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ConfigError("cannot collate an empty batch")
        if self.batching == "crop":
            items = self._crop_to_shortest(items)
        waveforms = [item["waveform"] for item in items]
        lengths = torch.tensor([len(w) for w in waveforms], dtype=torch.long)
        batch: dict[str, Any] = {
            "waveforms": pad_sequences(waveforms, 0.0),
            "lengths": lengths,
            "fileids": [item["fileid"] for item in items],
            "indices": torch.tensor([int(item.get("index", -1)) for item in items]),
        }
        if items[0].get("labels") is not None:
            labels = [item["labels"] for item in items]
            self._check_labels(items)
            batch["labels"] = pad_sequences(labels, self.label_pad).long()
            batch["label_lengths"] = torch.tensor([len(x) for x in labels], dtype=torch.long)
        if self.frame_lengths is not None:
            frames = self.frame_lengths(lengths).long()
            total = int(self.frame_lengths(lengths.max().reshape(1)).reshape(-1)[0])
            _check_frames(items, frames)
            batch["frame_lengths"] = frames
            batch["padding_mask"] = torch.arange(total)[None, :] >= frames[:, None]
            batch["padded"] = bool(batch["padding_mask"].any())
            self._add_masks(batch, items, frames, total)
        elif self.mask_channel_prob > 0:
            self._add_masks(batch, items, None, 0)
        return batch

    def _crop_to_shortest(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every item cut to the batch's shortest one (spidr, minimal_hubert): a window at a
        random offset (the start without `random_crop`), on a label boundary with labels."""
        shortest = min(len(item["waveform"]) for item in items)
        generator = self._generator(items, stream=1)
        labelled = items[0].get("labels") is not None
        hop = self.samples_per_label if labelled else 1
        cropped = []
        for item in items:
            start = 0
            if self.random_crop:
                choices = (len(item["waveform"]) - shortest) // hop + 1
                start = int(torch.randint(choices, (), generator=generator)) * hop
            crop = {**item, "waveform": item["waveform"][start : start + shortest]}
            if labelled:
                first = start // hop
                crop["labels"] = item["labels"][first : first + round(shortest / hop)]
            cropped.append(crop)
        return cropped

    def _check_labels(self, items: Sequence[dict[str, Any]]) -> None:
        if self.num_classes is None:
            return
        for item in items:
            labels = item["labels"]
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(
                    f"{item['fileid']!r}: labels must be cluster ids in [0, {self.num_classes}); "
                    f"got {int(labels.min())}..{int(labels.max())} (labels of another k-means?)"
                )

    def _add_masks(
        self,
        batch: dict[str, Any],
        items: Sequence[dict[str, Any]],
        frames: torch.Tensor | None,
        total: int,
    ) -> None:
        if self.mask_prob <= 0 and self.mask_channel_prob <= 0:
            return
        generator = self._generator(items)
        size = len(items)
        if self.mask_prob > 0 and frames is not None:
            mask = compute_mask(
                (size, total),
                self.mask_prob,
                self.mask_length,
                self.min_masks,
                frames,
                generator,
                require_same_masks=self.require_same_masks,
            )
            batch["mask"] = mask
            batch["masked_frames"] = mask.flatten().nonzero().squeeze(1)
            unmasked = ~mask & ~batch["padding_mask"]
            batch["unmasked_frames"] = unmasked.flatten().nonzero().squeeze(1)
            if self.mask_indices:
                batch["mask_indices"] = mask_to_indices(mask)
        if self.mask_channel_prob > 0:
            assert self.num_channels is not None  # checked in __init__
            batch["channel_mask"] = compute_mask(
                (size, self.num_channels),
                self.mask_channel_prob,
                self.mask_channel_length,
                0,
                None,
                generator,
            )


def _check_frames(items: Sequence[dict[str, Any]], frames: torch.Tensor) -> None:
    """Every row gives at least one frame (the model does not check in training)."""
    for item, count in zip(items, frames.tolist(), strict=True):
        if count < 1:
            raise DataError(
                f"{item['fileid']!r}: {len(item['waveform'])} samples are too short for one "
                "frame; raise data.min_sample_size"
            )
