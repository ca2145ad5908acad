"""Out-of-core k-means: a store streamed block by block gives the in-memory result (float32 and
float16 stores, our layout, fairseq npy/len and per-file dirs), never materializes more than a
block or the k-means++ sample, samples frames as documented, and N gloo processes (local
workers, or a submitit job) give the centroids of one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sslspeech.cli import main
from sslspeech.errors import DataError
from sslspeech.features import StoreWriter, open_store
from sslspeech.features.store import write_store_meta
from sslspeech.features.stream import sample_frames
from sslspeech.units import KMeans, fit_store


def utterances(count: int = 40, dim: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Utterances of 5-60 frames around 8 centres (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(8, dim))
    data = {}
    for i in range(count):
        labels = rng.integers(0, 8, size=int(rng.integers(5, 60)))
        data[f"u{i:03d}"] = (centres[labels] + rng.normal(size=(labels.size, dim))).astype(
            np.float32
        )
    return data


def write_store(directory: Path, data: dict[str, np.ndarray], shards: int = 3, dtype="float32"):
    write_store_meta(directory, {"num_shards": shards})
    keys = list(data)
    for shard in range(shards):
        with StoreWriter(directory, shard, shards, dtype=dtype) as writer:
            for key in keys[shard::shards]:
                writer.add(key, data[key])
    return directory


def in_store_order(directory: Path) -> np.ndarray:
    store = open_store(directory)
    return np.concatenate([np.asarray(store[key], dtype=np.float32) for key in store])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_streamed_fit_equals_the_in_memory_fit(tmp_path, dtype):
    """Blocks of 64 rows over 3 shards: the centroids of the frames fitted in memory (1e-5)."""
    store = write_store(tmp_path / "store", utterances(), dtype=dtype)
    streamed = fit_store(open_store(store), 8, fraction=1.0, seed=2, block_rows=64)
    frames = in_store_order(store)
    in_memory = KMeans.fit(frames, 8, seed=2)
    torch.testing.assert_close(streamed.centroids, in_memory.centroids, rtol=1e-5, atol=1e-5)
    assert streamed.metadata["num_points"] == str(len(frames))


def test_layouts_give_the_same_model(tmp_path):
    """Our store, a fairseq npy/len dump and a per-file .npy directory: the same centroids."""
    data = utterances()
    ours = write_store(tmp_path / "ours", data, shards=1)
    fairseq = tmp_path / "fairseq"
    fairseq.mkdir()
    np.save(fairseq / "train_0_1.npy", np.concatenate(list(data.values())))
    (fairseq / "train_0_1.len").write_text("".join(f"{len(v)}\n" for v in data.values()))
    per_file = tmp_path / "per_file"
    per_file.mkdir()
    for key, value in data.items():
        np.save(per_file / f"{key}.npy", value)
    models = [
        fit_store(open_store(path), 8, fraction=0.5, seed=1, block_rows=100)
        for path in (ours, fairseq, per_file)
    ]
    for model in models[1:]:
        torch.testing.assert_close(model.centroids, models[0].centroids, rtol=1e-5, atol=1e-5)


def test_a_pass_reads_one_block_at_a_time(tmp_path, monkeypatch):
    """No read is larger than a block, and only k-means++ takes rows apart (its sample)."""
    from sslspeech.features.stream import StoreFrames

    store = write_store(tmp_path / "store", utterances(count=80))
    reads, takes = [], []
    read, take = StoreFrames.read, StoreFrames.take
    monkeypatch.setattr(StoreFrames, "read", lambda s, a, b: reads.append(b - a) or read(s, a, b))
    monkeypatch.setattr(
        StoreFrames, "take", lambda s, rows: takes.append(len(rows)) or take(s, rows)
    )
    model = fit_store(open_store(store), 8, fraction=1.0, block_rows=128, init_size=200)
    total = int(model.metadata["num_points"])
    assert total > 2000 and max(reads) == 128 and takes == [200]
    assert sum(reads) == total * int(model.metadata["iterations"])


def test_max_frames_is_an_even_seeded_sample(tmp_path):
    """max_frames M of N frames: M distinct rows, spaced N/M apart from a seeded start."""
    data = utterances()
    store = open_store(write_store(tmp_path / "store", data))
    full = sample_frames(store, 1.0, seed=0)
    capped = sample_frames(store, 1.0, seed=0, max_frames=100)
    all_rows = full.take(np.arange(full.num_frames)).numpy()
    picked = capped.take(np.arange(100)).numpy()
    positions = [int(np.flatnonzero((all_rows == row).all(1))[0]) for row in picked]
    gaps = np.diff(positions)
    assert capped.num_frames == 100 and len(set(positions)) == 100
    assert gaps.min() >= full.num_frames // 100 and gaps.max() <= full.num_frames // 100 + 1
    again = sample_frames(store, 1.0, seed=0, max_frames=100).take(np.arange(100)).numpy()
    other = sample_frames(store, 1.0, seed=5, max_frames=100).take(np.arange(100)).numpy()
    assert np.array_equal(picked, again) and not np.array_equal(picked, other)
    np.testing.assert_array_equal(capped.read(0, 100).numpy(), picked)


def test_non_finite_frames_are_refused(tmp_path):
    """A NaN in the store stops the fit with a DataError instead of a NaN model."""
    data = utterances()
    data["u007"][3, 1] = np.nan
    store = write_store(tmp_path / "store", data)
    with pytest.raises(DataError, match="NaN or infinite"):
        fit_store(open_store(store), 4, fraction=1.0, block_rows=64)


def _fit_command(store: Path, out: Path, *extra: str) -> torch.Tensor:
    args = ["kmeans", str(store), str(out), "--k", "8", "--fraction", "1", "--seed", "3"]
    assert main([*args, *extra]) == 0
    return KMeans.load(out).centroids


def test_two_local_processes_give_the_centroids_of_one(tmp_path, monkeypatch):
    """`--nproc 2`: two gloo workers, each streaming half of the blocks; same centroids (1e-5)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = write_store(tmp_path / "store", utterances(count=400, dim=4))
    one = _fit_command(store, tmp_path / "one.safetensors", "--block-rows", "1000")
    two = _fit_command(store, tmp_path / "two.safetensors", "--block-rows", "1000", "--nproc", "2")
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-5)
    assert KMeans.load(tmp_path / "two.safetensors").metadata["world_size"] == "2"


def test_the_plan_is_logged_before_the_fit(tmp_path, caplog):
    """Before k-means++ starts: data size, memory per process and an estimated time."""
    store = write_store(tmp_path / "store", utterances(), dtype="float16")
    with caplog.at_level("INFO", logger="sslspeech.units.kmeans"):
        fit_store(open_store(store), 8, fraction=1.0, max_iter=3)
    (plan,) = [r.getMessage() for r in caplog.records if "estimated time" in r.getMessage()]
    assert "frames x 6 from 40 utterances (float16 store" in plan
    assert "MiB per process" in plan and "s per pass x 3" in plan
