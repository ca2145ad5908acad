"""The feature store: round trip, atomic shards, incomplete/mismatched stores, and the foreign
layouts open_store reads (fairseq .npy/.len dumps, per-file .pt/.npy directories)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslspeech.errors import DataError
from sslspeech.features import StoreWriter, open_store
from sslspeech.features.store import shard_complete, shard_paths, write_store_meta


def arrays(count: int, dim: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = [0, 1, *rng.integers(2, 40, size=count - 2)]
    return {
        f"utt{i:03d}": rng.normal(size=(n, dim)).astype(np.float32) for i, n in enumerate(lengths)
    }


def write_store(directory, data, num_shards=2, dtype="float32"):
    write_store_meta(directory, {"num_shards": num_shards, "frame_rate": 100})
    keys = list(data)
    for shard in range(num_shards):
        with StoreWriter(directory, shard, num_shards, dtype=dtype) as writer:
            for key in keys[shard::num_shards]:
                writer.add(key, data[key])


def test_round_trip(tmp_path):
    """Every array comes back equal, in shard then write order, memory-mapped and read-only."""
    data = arrays(9)
    write_store(tmp_path, data, num_shards=3)
    store = open_store(tmp_path)
    assert len(store) == 9 and set(store) == set(data)
    assert list(store)[:3] == ["utt000", "utt003", "utt006"]
    for key, value in data.items():
        np.testing.assert_array_equal(store[key], value)
        assert store.length(key) == value.shape[0]
    assert store.dim == 5 and store.frame_rate == 100
    assert not store["utt004"].flags.writeable
    plain = np.load(shard_paths(tmp_path, 0, 3)[0])  # a normal .npy too
    assert plain.shape == (sum(data[k].shape[0] for k in list(data)[::3]), 5)


def test_float16_and_torch_input(tmp_path):
    """float16 stores halve the size; torch tensors are accepted."""
    write_store_meta(tmp_path, {"num_shards": 1})
    value = torch.randn(7, 3)
    with StoreWriter(tmp_path, dtype="float16") as writer:
        writer.add("a", value)
    out = open_store(tmp_path)["a"]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), value.numpy(), atol=2e-3)


def test_failed_writer_leaves_nothing(tmp_path):
    """An exception inside the block leaves neither the shard nor temporary files."""
    with pytest.raises(RuntimeError), StoreWriter(tmp_path, 0, 2) as writer:
        writer.add("a", np.ones((3, 2), np.float32))
        raise RuntimeError("crash")
    assert not shard_complete(tmp_path, 0, 2)
    assert list(tmp_path.iterdir()) == []


def test_writer_checks_input(tmp_path):
    """Bad shapes, dims and fileids are DataErrors naming the utterance."""
    with StoreWriter(tmp_path) as writer:
        writer.add("a", np.ones((3, 2), np.float32))
        with pytest.raises(DataError, match="dim 3"):
            writer.add("b", np.ones((3, 3), np.float32))
        with pytest.raises(DataError, match="frames, dim"):
            writer.add("c", np.ones(3, np.float32))
        with pytest.raises(DataError, match="tab"):
            writer.add("d\te", np.ones((3, 2), np.float32))


def test_incomplete_and_mismatched_store(tmp_path):
    """Missing shards and a store.json of another extraction are errors that say what to do."""
    write_store_meta(tmp_path, {"num_shards": 3, "kind": "mfcc"})
    with StoreWriter(tmp_path, 0, 3) as writer:
        writer.add("a", np.ones((2, 2), np.float32))
    with pytest.raises(DataError, match=r"shards \[1, 2\] of 3"):
        open_store(tmp_path)
    with pytest.raises(DataError, match="kind"):
        write_store_meta(tmp_path, {"num_shards": 3, "kind": "model"})


def write_fairseq(directory, data, nshard, split="train", names=True):
    """fairseq's dump layout: {split}_{rank}_{nshard}.npy (frames, D) + .len, and {split}.tsv."""
    keys = list(data)
    total = len(keys)
    if names:
        lines = ["/corpus"] + [f"spk/{k}.flac\t16000" for k in keys]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    for rank in range(nshard):
        start, end = round(total / nshard * rank), round(total / nshard * (rank + 1))
        part = [data[k] for k in keys[start:end]]
        np.save(directory / f"{split}_{rank}_{nshard}.npy", np.concatenate(part))
        lengths = "".join(f"{len(p)}\n" for p in part)
        (directory / f"{split}_{rank}_{nshard}.len").write_text(lengths)


def test_fairseq_dump(tmp_path):
    """Shards of a fairseq dump read as one mapping, names from the .tsv (fairseq's ranges)."""
    data = {k: v for k, v in arrays(10).items() if len(v)}
    write_fairseq(tmp_path, data, nshard=3)
    store = open_store(tmp_path)
    assert list(store) == list(data)
    for key, value in data.items():
        np.testing.assert_array_equal(store[key], value)
    one = open_store(tmp_path / "train_1_3.npy")  # a single shard, its names from the .tsv
    keys = list(data)[round(len(data) / 3) : round(len(data) / 3 * 2)]
    assert list(one) == keys
    np.testing.assert_array_equal(one[keys[0]], data[keys[0]])


def test_fairseq_without_names_and_errors(tmp_path):
    """Without a .tsv the keys are row numbers; a missing rank or a second split is an error."""
    data = {k: v for k, v in arrays(6).items() if len(v)}
    write_fairseq(tmp_path, data, nshard=2, names=False)
    store = open_store(tmp_path)
    assert list(store) == [str(i) for i in range(len(data))]
    np.testing.assert_array_equal(store["1"], list(data.values())[1])
    write_fairseq(tmp_path, data, nshard=1, split="valid", names=False)
    with pytest.raises(DataError, match="several fairseq dumps"):
        open_store(tmp_path)
    assert len(open_store(tmp_path, split="valid")) == len(data)
    (tmp_path / "train_1_2.len").unlink()
    with pytest.raises(DataError, match="lacks ranks"):
        open_store(tmp_path, split="train")


def test_per_file_directories(tmp_path):
    """.pt tensors and .npy arrays, one per utterance, keyed by file stem (subfolders too)."""
    (tmp_path / "sub").mkdir()
    torch.save(torch.ones(4, 3), tmp_path / "a.pt")
    np.save(tmp_path / "sub" / "b.npy", np.zeros((2, 3), np.float32))
    store = open_store(tmp_path)
    assert sorted(store) == ["a", "b"]
    assert store["a"].shape == (4, 3) and store["b"].shape == (2, 3)
    with pytest.raises(DataError, match="no features found"):
        (tmp_path / "empty").mkdir()
        open_store(tmp_path / "empty")
