"""The run's one DataLoader (endless, workers alive across epochs) and crop-window decoding."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from sslspeech.data import audio
from sslspeech.data.collate import Collator
from sslspeech.data.dataset import AudioDataset
from sslspeech.data.manifest import ManifestEntry, write_manifest
from sslspeech.data.sampler import BucketBatchSampler
from sslspeech.errors import DataError
from sslspeech.training.data import Split

RATE = 16_000


def ramp_manifest(root: Path, sizes: list[int]) -> Path:
    """WAVs whose sample n encodes n (float WAV, exact), so a crop can be located."""
    entries = []
    for number, size in enumerate(sizes):
        path = root / f"u{number}.wav"
        sf.write(path, (np.arange(size) % 32768 / 32768).astype(np.float32), RATE, subtype="FLOAT")
        entries.append(ManifestEntry(f"u{number}", str(path), size))
    write_manifest(entries, root / "m.csv")
    return root / "m.csv"


def make_split(manifest: Path, num_workers: int) -> Split:
    dataset = AudioDataset(manifest, max_samples=6000, random_crop=True, seed=3)
    sampler = BucketBatchSampler(dataset.sizes, 12000, num_buckets=2, seed=3)
    collator = Collator(lambda n: n // 320, mask_prob=0.3, mask_length=2, seed=3)
    return Split(dataset, sampler, collator, num_workers, seed=3, prefetch_factor=3)


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("waveforms", "lengths", "indices", "mask")
    return all(torch.equal(a[k], b[k]) for k in keys) and a["fileids"] == b["fileids"]


def test_endless_loader_equals_a_loader_per_epoch(tmp_path: Path) -> None:
    """Three epochs through one endless loader with 2 workers (prefetching over the epoch
    ends) give the batches, crops and masks of three per-epoch loaders, from a resume point
    in the middle of the first epoch."""
    manifest = ramp_manifest(tmp_path, [9000, 7000, 5000, 12000, 8000, 6500, 4000, 10000])
    per_epoch = make_split(manifest, num_workers=0)
    expected = []
    for epoch in range(3):
        per_epoch.set_epoch(epoch)
        expected.extend(per_epoch.loader())
    endless = make_split(manifest, num_workers=2)
    endless.sampler.load_state_dict(per_epoch.sampler.state_dict(epoch=0, position=1))
    got = list(itertools.islice(endless.loader(endless=True), len(expected) - 1))
    assert len(expected) > 6  # several batches per epoch
    assert all(same_batch(a, b) for a, b in zip(expected[1:], got, strict=True))
    crops = {tuple(batch["waveforms"][0, :3].tolist()) for batch in got}
    assert len(crops) > 3  # crops really differ from batch to batch and epoch to epoch


def test_only_the_crop_window_is_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long utterance is read as its crop window (offset and length passed to the decoder)
    and equals the whole decoded file sliced at the crop's start."""
    manifest = ramp_manifest(tmp_path, [20000])
    calls: list[tuple[int, int]] = []
    decode = audio.decode

    def spy(source: Any, *, offset: int = 0, num_frames: int = -1) -> tuple[np.ndarray, int]:
        calls.append((offset, num_frames))
        return decode(source, offset=offset, num_frames=num_frames)

    monkeypatch.setattr(audio, "decode", spy)
    dataset = AudioDataset(manifest, max_samples=6000, random_crop=True, seed=5)
    whole = audio.load_audio(tmp_path / "u0.wav")
    for epoch in range(3):
        dataset.set_epoch(epoch)
        wav = dataset[0]["waveform"].numpy()
        offset, frames = calls[-1]
        assert frames == 6000 and len(wav) == 6000
        np.testing.assert_array_equal(wav, whole[offset : offset + 6000])
    assert len({offset for offset, _ in calls[-3:]}) > 1


def test_normalized_crops_use_the_whole_utterance(tmp_path: Path) -> None:
    """With normalize the file is standardized by its own statistics, then cropped (fairseq)."""
    manifest = ramp_manifest(tmp_path, [20000])
    dataset = AudioDataset(manifest, max_samples=6000, normalize=True, random_crop=False)
    whole = audio.standardize(audio.load_audio(tmp_path / "u0.wav"))
    np.testing.assert_allclose(dataset[0]["waveform"].numpy(), whole[:6000])


def test_stale_manifest_length_is_an_error(tmp_path: Path) -> None:
    """A manifest listing more samples than the file holds names the file and the fix."""
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(4000, np.float32), RATE, subtype="FLOAT")
    write_manifest([ManifestEntry("short", str(path), 9000)], tmp_path / "m.csv")
    dataset = AudioDataset(tmp_path / "m.csv", max_samples=6000, random_crop=False)
    with pytest.raises(DataError, match=r"'short' lists 9000 samples.*sslspeech manifest"):
        dataset[0]
