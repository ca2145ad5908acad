"""Transcription: units equal k-means predictions in store order (JSONL and .km); shards, process
pools and single-shard jobs give the same file; a crash then a rerun gives the same file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sslspeech.features import StoreWriter
from sslspeech.features.store import write_store_meta
from sslspeech.units import KMeans, transcribe
from sslspeech.units.assign import part_path, parts_dir, transcribe_shard


@pytest.fixture
def setup(tmp_path):
    """A 2-shard store of 11 utterances (one empty) and a k=6 model saved as safetensors."""
    rng = np.random.default_rng(0)
    data = {
        f"u{i:02d}": rng.normal(size=(int(n), 4)).astype(np.float32)
        for i, n in enumerate([5, 0, *rng.integers(1, 30, size=9)])
    }
    store = tmp_path / "store"
    write_store_meta(store, {"num_shards": 2})
    keys = list(data)
    for shard, part in enumerate((keys[:6], keys[6:])):
        with StoreWriter(store, shard, 2) as writer:
            for key in part:
                writer.add(key, data[key])
    model = KMeans.fit(np.concatenate(list(data.values())), 6, seed=0)
    model.save(tmp_path / "km.safetensors")
    return data, store, tmp_path / "km.safetensors", model


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_units_equal_predictions(setup, tmp_path):
    """One line per utterance in store order: {"fileid", "units"} = model.predict(features)."""
    data, store, km, model = setup
    out = transcribe(store, km, tmp_path / "units.jsonl", quiet=True)
    lines = read_jsonl(out)
    assert [line["fileid"] for line in lines] == list(data)
    for line in lines:
        assert line["units"] == model.predict(data[line["fileid"]]).tolist()
    assert lines[1]["units"] == []
    assert not parts_dir(out).exists()
    km_out = transcribe(store, km, tmp_path / "units.km", km=True, quiet=True)
    assert km_out.read_text().splitlines() == [" ".join(map(str, x["units"])) for x in lines]


def test_shards_pool_and_single_jobs_agree(setup, tmp_path):
    """4 shards, a 2-process pool, and 3 separate --shard jobs all write the same file."""
    _, store, km, _ = setup
    reference = transcribe(store, km, tmp_path / "one.jsonl", quiet=True).read_bytes()
    assert transcribe(store, km, tmp_path / "four.jsonl", num_shards=4).read_bytes() == reference
    pooled = transcribe(store, km, tmp_path / "pool.jsonl", num_shards=3, workers=2)
    assert pooled.read_bytes() == reference
    out = tmp_path / "jobs.jsonl"
    for shard in (2, 0):
        transcribe(store, km, out, shard=shard, num_shards=3)
        assert not out.exists()
    transcribe(store, km, out, shard=1, num_shards=3)
    assert out.read_bytes() == reference


class CrashError(Exception):
    pass


def test_crash_then_rerun_gives_identical_file(setup, tmp_path):
    """A crash inside shard 1 keeps part 0, writes no part 1 and no output; the rerun makes the
    same file as an uninterrupted run."""
    _, store, km, _ = setup
    reference = transcribe(store, km, tmp_path / "clean.jsonl", num_shards=3).read_bytes()
    out = tmp_path / "units.jsonl"
    transcribe(store, km, out, shard=0, num_shards=3)

    def crash(i: int) -> None:
        if i == 5:
            raise CrashError

    with pytest.raises(CrashError):
        transcribe_shard(store, km, out, 1, 3, on_utterance=crash)
    assert part_path(out, 0, 3).is_file() and not part_path(out, 1, 3).exists()
    assert not out.exists()
    assert not [p for p in parts_dir(out).iterdir() if p.name.endswith(".tmp")]
    transcribe(store, km, out, num_shards=3)
    assert out.read_bytes() == reference


def test_stale_parts_of_another_model_are_redone(setup, tmp_path):
    """Parts made with other centroids are discarded, not joined."""
    data, store, km, _ = setup
    out = tmp_path / "units.jsonl"
    transcribe(store, km, out, shard=0, num_shards=2)
    other = KMeans.fit(np.concatenate(list(data.values())), 3, seed=1)
    other.save(tmp_path / "other.safetensors")
    transcribe(store, tmp_path / "other.safetensors", out, num_shards=2)
    assert max(u for line in read_jsonl(out) for u in line["units"]) < 3


def test_cli_end_to_end(setup, tmp_path):
    """`sslspeech transcribe` writes the same units as the function."""
    from sslspeech.cli import main

    _, store, km, _ = setup
    reference = transcribe(store, km, tmp_path / "ref.jsonl").read_bytes()
    assert main(["transcribe", str(store), str(km), str(tmp_path / "cli.jsonl"), "--quiet"]) == 0
    assert (tmp_path / "cli.jsonl").read_bytes() == reference


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_units_are_assigned_one_block_at_a_time(tmp_path, monkeypatch, dtype):
    """Blocks of 7 rows over utterances of 0-30 frames (most cut by a block's end): no k-means
    call sees more than a block, each frame is assigned once, and every utterance's units are
    the predictions of its own frames (float16 stores: of its float16 values)."""
    from sslspeech.features import open_store
    from sslspeech.units.assign import assigned_units

    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 31, size=25)
    data = {f"u{i:02d}": rng.normal(size=(int(n), 4)) for i, n in enumerate(lengths)}
    store = tmp_path / "store"
    write_store_meta(store, {"num_shards": 1})
    with StoreWriter(store, 0, 1, dtype=dtype) as writer:
        for key, value in data.items():
            writer.add(key, value)
    model = KMeans(rng.normal(size=(5, 4)))
    calls = []
    predict = KMeans.predict

    def counted(self, x, *args):
        calls.append(len(x))
        return predict(self, x, *args)

    monkeypatch.setattr(KMeans, "predict", counted)
    units = list(assigned_units(open_store(store), list(data), model, block_rows=7))
    total = sum(len(value) for value in data.values())
    assert max(calls) == 7 and sum(calls) == total and len(calls) == -(-total // 7)
    monkeypatch.setattr(KMeans, "predict", predict)
    for labels, value in zip(units, data.values(), strict=True):
        expected = model.predict(value.astype(dtype).astype(np.float32))
        assert labels.tolist() == expected.tolist()
