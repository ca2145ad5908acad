"""Dataset (crops aligned to labels, filtering, tar-backed loading in workers) and collate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from sslspeech.data.audio import load_audio
from sslspeech.data.collate import Collator
from sslspeech.data.dataset import AudioDataset
from sslspeech.data.manifest import ManifestEntry, read_manifest, write_manifest
from sslspeech.data.sampler import BucketBatchSampler
from sslspeech.data.scan import create_manifest
from sslspeech.errors import ConfigError, DataError
from sslspeech.models.configs import HuBERTConfig
from sslspeech.models.encoder import conv_output_lengths

from .conftest import RATE, make_tar


def base_frame_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames of HuBERT Base's conv stack (the model's own rule: 400-sample field, 320 hop)."""
    return conv_output_lengths(lengths, HuBERTConfig())


LENGTHS = {"a": 16000, "b": 9600, "c": 4160, "d": 320 * 7, "e": 1000}


def ramp_corpus(tmp_path: Path, label_hop: int = 320) -> Path:
    """WAVs whose sample n encodes n (so crops can be located) with units labelling each hop
    of `label_hop` samples by its index; returns a CSV manifest with a units column."""
    entries = []
    for fileid, size in LENGTHS.items():
        path = tmp_path / f"{fileid}.wav"
        sf.write(path, (np.arange(size) % 32768 / 32768).astype(np.float32), RATE, subtype="FLOAT")
        units = tuple(range(size // label_hop))
        entries.append(ManifestEntry(fileid, str(path), size, units=units))
    write_manifest(entries, tmp_path / "m.csv")
    return tmp_path / "m.csv"


def test_items_filtering_and_sizes(tmp_path: Path, caplog) -> None:
    """Items are the manifest's waveforms; short ones are dropped and counted in the log."""
    manifest = ramp_corpus(tmp_path)
    with caplog.at_level(logging.INFO):
        dataset = AudioDataset(manifest, min_samples=2000, max_samples=5000)
    assert dataset.num_dropped == 1 and "dropped 1 of 5" in caplog.text
    assert len(dataset) == 4 and dataset.sizes.tolist() == [5000, 5000, 4160, 2240]
    item = dataset[2]
    assert item["fileid"] == "c" and item["labels"] is None
    np.testing.assert_array_equal(item["waveform"].numpy(), load_audio(tmp_path / "c.wav"))


@pytest.mark.parametrize("label_rate", [50.0, 100.0])
def test_random_crop_keeps_labels_aligned(tmp_path: Path, label_rate: float) -> None:
    """Crops start on a label boundary and carry exactly the labels of the cropped samples
    (50 Hz: 320 samples per label; 100 Hz MFCC labels: 160)."""
    hop = int(RATE / label_rate)
    manifest = ramp_corpus(tmp_path, hop)
    dataset = AudioDataset(manifest, labels="manifest", label_rate=label_rate, max_samples=6400)
    starts = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        item = dataset[0]
        wav = item["waveform"].numpy()
        start = round(float(wav[0]) * 32768)
        assert start % hop == 0 and len(wav) == 6400
        assert item["labels"].tolist() == list(range(start // hop, start // hop + 6400 // hop))
        starts.add(start)
    assert len(starts) > 1  # crops move between epochs
    uncropped = dataset[3]
    assert uncropped["labels"].tolist() == list(range(LENGTHS["d"] // hop))


def test_crops_are_reproducible(tmp_path: Path) -> None:
    """Same seed and epoch -> same crop; the item seed changes with the epoch."""
    manifest = ramp_corpus(tmp_path)
    one, two = (AudioDataset(manifest, max_samples=3000, seed=9) for _ in range(2))
    assert torch.equal(one[0]["waveform"], two[0]["waveform"])
    seed0 = one[0]["seed"]
    one.set_epoch(1)
    assert one[0]["seed"] != seed0


def test_labels_from_units_file_and_mapping(tmp_path: Path) -> None:
    """Units JSONL and a dict work like the manifest column; missing ids and wrong durations
    are DataErrors naming the utterance."""
    manifest = ramp_corpus(tmp_path)
    units = {f: list(range(n // 320)) for f, n in LENGTHS.items()}
    path = tmp_path / "units.jsonl"
    path.write_text("".join(json.dumps({"fileid": f, "units": u}) + "\n" for f, u in units.items()))
    from_file = AudioDataset(manifest, labels=path)
    from_dict = AudioDataset(manifest, labels=units)
    assert from_file[1]["labels"].tolist() == from_dict[1]["labels"].tolist() == units["b"]
    with pytest.raises(DataError, match="no units for 'e'"):
        AudioDataset(manifest, labels={k: v for k, v in units.items() if k != "e"})
    with pytest.raises(DataError, match="differs from the audio"):
        AudioDataset(manifest, labels=units, label_rate=100.0)
    with pytest.raises(ConfigError, match="whole number"):
        AudioDataset(manifest, labels=units, label_rate=48.0)


def test_normalize_standardizes_each_item(tmp_path: Path) -> None:
    """normalize=True gives zero mean, unit variance per utterance."""
    dataset = AudioDataset(ramp_corpus(tmp_path), normalize=True)
    wav = dataset[0]["waveform"]
    assert abs(float(wav.mean())) < 1e-4 and abs(float(wav.std()) - 1) < 1e-3


def test_collate_pads_and_masks(tmp_path: Path) -> None:
    """Batch keys, padding values, frame padding mask, labels padded with -100, masks only on
    valid frames with the same count per row, their frames listed, channel mask, and masks
    fixed by item seeds."""
    dataset = AudioDataset(ramp_corpus(tmp_path), labels="manifest", min_samples=2000)
    collate = Collator(
        base_frame_lengths,
        mask_prob=0.65,
        mask_length=3,
        mask_indices=True,
        mask_channel_prob=0.2,
        mask_channel_length=4,
        num_channels=32,
    )
    items = [dataset[i] for i in range(len(dataset))]
    batch = collate(items)
    lengths = torch.tensor([16000, 9600, 4160, 2240])
    assert torch.equal(batch["lengths"], lengths)
    assert batch["waveforms"].shape == (4, 16000) and batch["fileids"] == ["a", "b", "c", "d"]
    assert float(batch["waveforms"][3, 2240:].abs().sum()) == 0
    frames = base_frame_lengths(lengths)
    assert torch.equal(batch["frame_lengths"], frames) and batch["padded"] is True
    assert torch.equal(batch["padding_mask"].sum(1), 49 - frames)
    assert batch["labels"].shape == (4, 50)
    assert batch["labels"][3, 7:].eq(-100).all() and batch["labels"][3, :7].tolist() == list(
        range(7)
    )
    assert torch.equal(batch["label_lengths"], torch.tensor([50, 30, 13, 7]))
    mask = batch["mask"]
    assert not (mask & batch["padding_mask"]).any()
    assert len(set(mask.sum(1).tolist())) == 1 and mask.sum() > 0
    assert batch["mask_indices"].shape == (4, int(mask.sum(1)[0]))
    rows, columns = batch["masked_frames"] // 49, batch["masked_frames"] % 49
    assert torch.equal(columns.view(4, -1), batch["mask_indices"])
    assert torch.equal(rows, torch.arange(4).repeat_interleave(mask.sum(1)))
    unmasked = torch.zeros(4 * 49, dtype=torch.bool)
    unmasked[batch["unmasked_frames"]] = True
    assert torch.equal(unmasked.view(4, 49), ~mask & ~batch["padding_mask"])
    assert batch["channel_mask"].shape == (4, 32)
    assert torch.equal(collate(items)["mask"], mask)
    dataset.set_epoch(1)
    assert not torch.equal(collate([dataset[i] for i in range(len(dataset))])["mask"], mask)
    with pytest.raises(ConfigError, match="frame_lengths"):
        Collator(mask_prob=0.5)


@pytest.mark.parametrize("same_masks", [True, False])
def test_collated_tensors_are_contiguous(tmp_path: Path, same_masks: bool) -> None:
    """Every tensor of a batch has row-major strides, masks too, for one row as for several (a
    compiled model guards on the strides of its inputs: a view of a wider tensor recompiles
    it)."""
    dataset = AudioDataset(ramp_corpus(tmp_path), labels="manifest", min_samples=2000)
    collate = Collator(
        base_frame_lengths,
        mask_prob=0.65,
        mask_length=3,
        require_same_masks=same_masks,
        mask_indices=same_masks,
    )
    for items in ([dataset[0]], [dataset[0], dataset[0]], [dataset[i] for i in range(4)]):
        batch = collate(items)
        strided = [
            key
            for key, value in batch.items()
            if isinstance(value, torch.Tensor)
            and value.stride() != torch.empty(value.shape).stride()
        ]
        assert strided == []


@pytest.mark.parametrize("random_crop", [True, False])
def test_crop_batching_cuts_to_the_shortest_utterance(tmp_path: Path, random_crop: bool) -> None:
    """batching="crop": every row is a window of its utterance as long as the shortest one,
    starting on a label boundary, with the labels of that window; no padding anywhere, so the
    masks cover only valid frames and their frame lists agree; pad batching is unchanged."""
    dataset = AudioDataset(ramp_corpus(tmp_path), labels="manifest", min_samples=2000)
    items = [dataset[i] for i in range(len(dataset))]
    options = {"mask_prob": 0.65, "mask_length": 3, "seed": 3}
    crop = Collator(base_frame_lengths, batching="crop", random_crop=random_crop, **options)
    batch = crop(items)
    shortest = min(len(item["waveform"]) for item in items)
    assert batch["waveforms"].shape == (4, shortest) and not batch["padded"]
    assert torch.equal(batch["lengths"], torch.full((4,), shortest))
    assert not batch["padding_mask"].any()
    frames = int(base_frame_lengths(torch.tensor([shortest]))[0])
    assert torch.equal(batch["frame_lengths"], torch.full((4,), frames))
    assert batch["labels"].shape == (4, round(shortest / 320))
    starts = []
    for row, item in enumerate(items):
        # sample n of a ramp WAV encodes n: the window's first sample gives its offset
        start = round(float(batch["waveforms"][row, 0]) * 32768)
        assert start % 320 == 0 and start + shortest <= len(item["waveform"])
        assert torch.equal(batch["waveforms"][row], item["waveform"][start : start + shortest])
        first = start // 320
        assert batch["labels"][row].tolist() == item["labels"][first : first + 7].tolist()
        starts.append(start)
    assert (max(starts) > 0) is random_crop
    assert batch["masked_frames"].numel() + batch["unmasked_frames"].numel() == 4 * frames
    assert torch.equal(crop(items)["waveforms"], batch["waveforms"])
    padded = Collator(base_frame_lengths, **options)(items)
    assert padded["waveforms"].shape == (4, 16000) and padded["padded"]
    with pytest.raises(ConfigError, match="batching"):
        Collator(batching="trim")


def test_collate_checks_what_the_model_does_not(tmp_path: Path) -> None:
    """Labels outside [0, num_classes) and rows too short for one frame are DataErrors naming
    the utterance (the training forward does not check them on the device)."""
    dataset = AudioDataset(ramp_corpus(tmp_path), labels="manifest")
    items = [dataset[i] for i in range(len(dataset))]
    with pytest.raises(DataError, match=r"'a'.*cluster ids in \[0, 10\)"):
        Collator(base_frame_lengths, num_classes=10)(items[:1])
    Collator(base_frame_lengths, num_classes=50)(items[:1])
    short = {**items[0], "waveform": torch.zeros(399), "fileid": "short"}
    with pytest.raises(DataError, match=r"'short'.*too short for one frame"):
        Collator(base_frame_lengths)([items[0], short])


def test_tar_backed_loader_in_worker_processes(corpus, tmp_path: Path) -> None:
    """A DataLoader over tar members with 2 forked workers (each opens its own archive handle)
    gives exactly the batches of the in-process loader, masks included."""
    root, _ = corpus
    tar_path = tmp_path / "c.tar"
    make_tar(root, tar_path)
    create_manifest(tar_path, tmp_path / "t.csv", ext="wav,flac", quiet=True)
    dataset = AudioDataset(read_manifest(tmp_path / "t.csv"), max_samples=4000)
    sampler = BucketBatchSampler(dataset.sizes, 9000, num_buckets=2, seed=1)
    collate = Collator(base_frame_lengths, mask_prob=0.5, mask_length=2)

    def batches(workers: int) -> list[dict]:
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == len(sampler) > 1
    for one, two in zip(serial, parallel, strict=True):
        assert one["fileids"] == two["fileids"]
        assert torch.equal(one["waveforms"], two["waveforms"])
        assert torch.equal(one["mask"], two["mask"])
    assert sum(len(b["fileids"]) for b in serial) == 6
