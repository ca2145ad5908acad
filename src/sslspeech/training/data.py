"""Glue between a training config and `sslspeech.data`: dataset, sampler, collator, loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslspeech.data.collate import Collator
from sslspeech.data.dataset import AudioDataset
from sslspeech.data.manifest import read_manifest, require_entries
from sslspeech.data.sampler import BucketBatchSampler
from sslspeech.errors import DataError
from sslspeech.models.registry import model_spec
from sslspeech.training.config import TrainConfig
from sslspeech.training.distributed import DistributedEnvironment


class EpochBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """The sampler's batches epoch after epoch (from its resume point), each index tagged with
    its epoch: one DataLoader serves the whole run, its workers live across epochs and keep
    prefetching over an epoch's end, and every item is still cropped and masked by its own
    epoch (the sampler runs ahead of training, so nothing may read a shared current epoch)."""

    def __init__(self, sampler: BucketBatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            epoch = self.sampler.epoch
            for batch in self.sampler:
                yield [(epoch, index) for index in batch]
            self.sampler.set_epoch(epoch + 1)


@dataclass
class Split:
    """A dataset with its batch sampler and collator, and the loaders over them."""

    dataset: AudioDataset
    sampler: BucketBatchSampler
    collator: Collator
    num_workers: int
    seed: int
    pin_memory: bool = False
    prefetch_factor: int = 2

    def set_epoch(self, epoch: int) -> None:
        """Crops, masks and batch order of `epoch`."""
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def probe_batch(self, num_samples: int) -> dict[str, Any]:
        """A batch of one synthetic utterance of `num_samples` (noise, zero labels when the
        data has labels), collated like real ones: what a FLOP count runs on."""
        generator = torch.Generator().manual_seed(self.seed)
        labels = None
        if self.dataset.labels is not None:
            labels = torch.zeros(num_samples // self.dataset.samples_per_label, dtype=torch.long)
        item = {
            "waveform": torch.randn(num_samples, generator=generator),
            "labels": labels,
            "fileid": "probe",
            "index": 0,
            "seed": self.seed,
        }
        return self.collator([item])

    def loader(self, *, endless: bool = False) -> torch.utils.data.DataLoader[Any]:
        """A DataLoader over the sampler's current epoch (from its resume position), or with
        `endless` over every epoch from there on (`EpochBatches`).

        It has its own generator, so creating it never draws from the global torch RNG (which
        a resumed run must continue exactly).
        """
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=EpochBatches(self.sampler) if endless else self.sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
        )


def build_split(
    config: TrainConfig,
    model: nn.Module,
    env: DistributedEnvironment,
    manifest: str,
    *,
    train: bool,
) -> Split:
    """Training (`train=True`: shuffled, random crops) or validation (fixed order, crops from
    the start, masks fixed by the items' seeds) data for `model`."""
    data, masking = config.data, config.masking
    entries = require_entries(read_manifest(manifest))
    labels: str | None = None
    label_rate = 50.0
    num_classes: int | None = None
    if model_spec(config.model.type).labels:
        if not entries.has_units:
            raise DataError(
                f"{manifest}: HuBERT needs frame labels, but the manifest has no units column; "
                "make one with `sslspeech units merge`"
            )
        labels = "manifest"
        model_config: Any = model.config
        rate = model_config.label_rate
        label_rate = float(rate) if rate is not None else 16000 / model_config.samples_per_frame
        num_classes = model_config.num_classes
    dataset = AudioDataset(
        entries,
        labels=labels,
        label_rate=label_rate,
        max_samples=data.max_sample_size,
        min_samples=data.min_sample_size,
        random_crop=data.random_crop and train,
        normalize=data.normalize,
        num_classes=getattr(model.config, "num_classes", None) if labels else None,
        seed=config.run.seed,
    )
    sampler = BucketBatchSampler(
        dataset.sizes,
        data.max_batch_samples,
        num_buckets=data.num_buckets,
        shuffle=train,
        seed=config.run.seed,
        rank=env.rank,
        world_size=env.world_size,
        drop_last=train,
    )
    collator = Collator(
        model.frame_lengths,  # type: ignore[arg-type]
        mask_prob=masking.mask_prob,
        mask_length=masking.mask_length,
        min_masks=masking.min_masks,
        require_same_masks=masking.require_same_masks,
        num_classes=num_classes,
        batching=data.batching,
        random_crop=data.random_crop and train,
        samples_per_label=dataset.samples_per_label,
        seed=config.run.seed,
    )
    return Split(
        dataset,
        sampler,
        collator,
        data.num_workers,
        config.run.seed,
        pin_memory=env.device.type == "cuda",
        prefetch_factor=data.prefetch_factor,
    )


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch moved to `device` (asynchronously from pinned memory on CUDA)."""
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }
