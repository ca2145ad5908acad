"""A map-style dataset over a manifest: waveforms, optional frame labels, random crops.

Labels (units) come at `label_rate` Hz (50 Hz for model-feature units, 100 Hz for MFCC units),
so one label covers ``samples_per_label = sample_rate / label_rate`` samples (320 or 160 at
16 kHz). A crop of an utterance longer than `max_samples` starts at a multiple of
`samples_per_label` when labels are used, so the crop's labels are exactly
``labels[start // spl : start // spl + round(max_samples / spl)]`` (fairseq's count) and stay
aligned to the model's frames; without labels the start is any sample.

Each item has its own seed derived from ``(seed, epoch, index)``: crops are reproducible, differ
between epochs, and the collator derives its mask generator from the items' seeds, so a
resumed run sees the same crops and masks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.data.audio import SAMPLE_RATE, load_audio, standardize
from sslspeech.data.manifest import Manifest, ManifestEntry, read_manifest
from sslspeech.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LabelSource = str | os.PathLike[str] | Mapping[str, Sequence[int] | np.ndarray]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def read_units(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Units JSONL (``{"fileid": ..., "units": [...]}`` per line) as fileid -> int array."""
    units: dict[str, np.ndarray] = {}
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                fileid, values = record["fileid"], np.asarray(record["units"], dtype=np.int64)
            except (ValueError, KeyError, TypeError) as error:
                raise DataError(
                    f"{path}:{number}: expected {{'fileid': str, 'units': [int, ...]}} ({error})"
                ) from None
            if values.ndim != 1:
                raise DataError(f"{path}:{number}: units must be a flat list of integers")
            if fileid in units:
                raise DataError(f"{path}:{number}: duplicate fileid {fileid!r}")
            units[fileid] = values
    return units


class _FlatLabels:
    """Labels of the kept items in one flat array of the smallest integer type that fits."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        counts = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        fits16 = flat.size == 0 or (flat.min() >= -(2**15) and flat.max() < 2**15)
        self.values = flat.astype(np.int16 if fits16 else np.int32)
        self.counts = counts

    def __getitem__(self, index: int) -> np.ndarray:
        return self.values[self.bounds[index] : self.bounds[index + 1]]


class AudioDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Utterances of a manifest as dicts: waveform, labels (or None), fileid, index, seed.

    `labels`: None (audio only), ``"manifest"`` (the manifest's units column), a units JSONL
    path, or a mapping fileid -> units; with `num_classes`, every unit must be in
    [0, num_classes) (the model's `model.num_classes`). Items shorter than `min_samples` (and
    longer than `max_keep_samples`, when set) are dropped at construction; the count is logged
    and kept in `num_dropped`. `sizes` are the item lengths after cropping, for the batch sampler.
    """

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike[str],
        *,
        labels: LabelSource | None = None,
        label_rate: float = 50.0,
        sample_rate: int = SAMPLE_RATE,
        max_samples: int | None = None,
        min_samples: int = 0,
        max_keep_samples: int | None = None,
        random_crop: bool = True,
        normalize: bool = False,
        resample: bool = False,
        downmix: bool = False,
        label_tolerance: float = 0.1,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        spl = sample_rate / label_rate
        if labels is not None and (spl <= 0 or spl != int(spl)):
            raise ConfigError(
                f"sample_rate / label_rate = {sample_rate} / {label_rate} must be a whole number "
                "of samples per label (50 Hz -> 320, 100 Hz -> 160 at 16 kHz)"
            )
        if max_samples is not None and max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {max_samples}")
        self.samples_per_label = int(spl)
        self.label_rate, self.sample_rate = label_rate, sample_rate
        self.max_samples, self.random_crop = max_samples, random_crop
        self.normalize, self.resample, self.downmix = normalize, resample, downmix
        self.seed, self.epoch = int(seed), 0
        self.indices, self.num_dropped = self._filter(min_samples, max_keep_samples)
        lengths = self.manifest.num_samples[self.indices]
        self.sizes = np.minimum(lengths, max_samples) if max_samples else lengths
        self.labels: _FlatLabels | None = None
        if labels is not None:
            self.labels = self._load_labels(labels, label_tolerance)
            if num_classes is not None:
                self._check_classes(self.labels, labels, num_classes)

    def _filter(self, min_samples: int, max_keep: int | None) -> tuple[np.ndarray, int]:
        sizes = self.manifest.num_samples
        keep = sizes >= max(min_samples, 1)
        if max_keep is not None:
            keep &= sizes <= max_keep
        indices = np.flatnonzero(keep)
        dropped = len(sizes) - len(indices)
        if dropped:
            log.info(
                "%s: dropped %d of %d utterances shorter than %d samples%s",
                self.manifest.source or "manifest",
                dropped,
                len(sizes),
                max(min_samples, 1),
                f" or longer than {max_keep}" if max_keep is not None else "",
            )
        if not len(indices):
            raise DataError(
                f"{self.manifest.source or 'manifest'}: no utterance left after "
                f"filtering by length (min_samples={min_samples})"
            )
        return indices, dropped

    def _load_labels(self, source: LabelSource, tolerance: float) -> _FlatLabels:
        name = self.manifest.source or "manifest"
        arrays: list[np.ndarray] = []
        if isinstance(source, str) and source == "manifest":
            for i in self.indices:
                units = self.manifest.units_array(int(i))
                if units is None:
                    raise DataError(f"{name}: {self.manifest.fileids[i]!r} has no units column")
                arrays.append(units)
        else:
            table = source if isinstance(source, Mapping) else read_units(source)
            for i in self.indices:
                fileid = self.manifest.fileids[i]
                if fileid not in table:
                    raise DataError(f"labels have no units for {fileid!r} (listed in {name})")
                arrays.append(np.asarray(table[fileid], dtype=np.int64))
        flat = _FlatLabels(arrays)
        seconds_audio = self.manifest.num_samples[self.indices] / self.sample_rate
        gap = np.abs(seconds_audio - flat.counts / self.label_rate)
        bad = np.flatnonzero(gap > tolerance)
        if len(bad):
            first = int(bad[0])
            raise DataError(
                f"{len(bad)} utterances have labels whose duration differs from the audio by "
                f"more than {tolerance} s, e.g. {self.manifest.fileids[self.indices[first]]!r}: "
                f"{flat.counts[first]} labels at {self.label_rate} Hz for "
                f"{seconds_audio[first]:.3f} s; check label_rate and that the units match {name}"
            )
        return flat

    def _check_classes(self, labels: _FlatLabels, source: LabelSource, num_classes: int) -> None:
        """Refuse a unit outside [0, num_classes), naming the labels, the fileid and the key."""
        values = np.asarray(labels.values, dtype=np.int64)
        bad = np.flatnonzero((values < 0) | (values >= num_classes))
        if not len(bad):
            return
        item = int(np.searchsorted(labels.bounds, bad[0], side="right")) - 1
        name = self.manifest.source or "manifest"
        if isinstance(source, Mapping):
            where = f"the labels of {name}"
        else:
            where = name if source == "manifest" else str(source)
        largest = int(values.max())
        raise DataError(
            f"{where}: {self.manifest.fileids[self.indices[item]]!r} has unit "
            f"{int(values[bad[0]])} at position {bad[0] - labels.bounds[item]}, outside "
            f"[0, {num_classes}) of model.num_classes={num_classes} ({len(bad)} such labels, "
            f"largest unit {largest}); set model.num_classes={largest + 1} (the k-means k) or "
            "relabel with the k-means model this run expects"
        )

    def set_epoch(self, epoch: int) -> None:
        """Crops (and masks derived from item seeds) change with the epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def _crop_start(self, length: int, size: int, rng: np.random.Generator) -> int:
        excess = length - size
        if not self.random_crop:
            return 0
        if self.labels is None:
            return int(rng.integers(0, excess + 1))
        spl = self.samples_per_label
        return int(rng.integers(0, excess // spl + 1)) * spl

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item `index` of the current epoch, or of `epoch` for an `(epoch, index)` key (what
        a sampler running ahead of training hands to DataLoader workers)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        entry = self.manifest[int(self.indices[index])]
        seed = item_seed(self.seed, epoch, index)
        labels = None if self.labels is None else self.labels[index]
        length = int(entry.num_samples)
        start, size = 0, length
        if self.max_samples is not None and length > self.max_samples:
            start = self._crop_start(length, self.max_samples, np.random.default_rng(seed))
            size = self.max_samples
            if labels is not None:
                first = start // self.samples_per_label
                labels = labels[first : first + round(size / self.samples_per_label)]
        wav = self._decode(entry, start, size)
        return {
            "waveform": torch.from_numpy(np.ascontiguousarray(wav)),
            "labels": None if labels is None else torch.from_numpy(labels.astype(np.int64)),
            "fileid": entry.fileid,
            "index": index,
            "seed": seed,
        }

    def _decode(self, entry: ManifestEntry, start: int, size: int) -> np.ndarray:
        """Samples `[start, start + size)` of `entry`. Only that window is decoded, unless the
        whole file is needed: to resample it, or to standardize it by the statistics of the
        whole utterance (fairseq's `normalize`)."""
        if self.resample or self.normalize:
            wav = load_audio(
                entry, sample_rate=self.sample_rate, resample=self.resample, downmix=self.downmix
            )
            wav = standardize(wav) if self.normalize else wav
            return wav[start : start + size]
        wav = load_audio(
            entry,
            sample_rate=self.sample_rate,
            downmix=self.downmix,
            offset=start,
            num_frames=size,
        )
        if len(wav) != size:
            raise DataError(
                f"{self.manifest.source or 'manifest'}: {entry.fileid!r} lists "
                f"{entry.num_samples} samples but decoding [{start}, {start + size}) gave "
                f"{len(wav)}; the manifest is stale: rebuild it with `sslspeech manifest`"
            )
        return wav
