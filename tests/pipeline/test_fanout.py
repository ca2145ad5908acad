"""Per-utterance stages fan out: N shards as local processes or a submitit job array (local
cluster), sized by `[executor] shards` or the manifest; a shard killed mid-way is the only one
redone by the rerun, and `pipeline status` shows shards done/total."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslspeech.data.audio import write_wav
from sslspeech.data.manifest import ManifestEntry, write_manifest
from sslspeech.errors import ConfigError
from sslspeech.features.extract import FeatureSpec, extract_features, extract_shard, shard_range
from sslspeech.pipeline import tasks
from sslspeech.pipeline.executors import LocalExecutor, SlurmExecutor
from sslspeech.pipeline.recipe import StageResources, load_recipe
from sslspeech.pipeline.recipes import build_stages
from sslspeech.pipeline.runner import Runner, StageFailedError
from sslspeech.pipeline.stage import Stage, StageContext
from sslspeech.pipeline.state import read_state
from sslspeech.pipeline.status import format_table, stage_rows
from tests.pipeline.test_recipe import BASE, write

NUM_SHARDS = 2


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Seven short noise WAVs and their manifest."""
    rng = np.random.default_rng(0)
    entries = []
    for i, n in enumerate([4000, 2400, 5000, 800, 3000, 1600, 4400]):
        path = tmp_path / "wav" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        write_wav(path, (0.1 * rng.standard_normal(n)).astype(np.float32))
        entries.append(ManifestEntry(f"u{i}", str(path), n))
    write_manifest(entries, tmp_path / "manifest.csv")
    return tmp_path / "manifest.csv"


def mfcc_shard_dies_once(context: StageContext) -> dict[str, Any]:
    """`tasks.extract_mfcc`, except that the first attempt at shard 1 kills its own process
    (no cleanup at all) after writing one utterance."""
    marker = context.run_dir / "shard-1-died"
    if context.shard == 1 and not marker.exists():
        marker.touch()
        manifest, out = context.inputs["manifest"], context.outputs["features"]

        def die(index: int) -> None:
            os._exit(9)

        extract_shard(manifest, out, FeatureSpec(), 1, NUM_SHARDS, on_utterance=die)
    return tasks.extract_mfcc(context)


def mfcc_stage(manifest: Path, run: Path, function: Any = tasks.extract_mfcc) -> Stage:
    return Stage(
        name="mfcc.features",
        function=function,
        inputs={"manifest": manifest},
        outputs={"features": run / "features"},
        params={"shards": NUM_SHARDS},
        shard_count=tasks.shard_count,
    )


def shard_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("shard-*"))}


def assert_same_store(store: Path, expected: Path) -> None:
    """The same shard files, indexes byte for byte, features within float32 rounding (a job
    on other threads may round FFTs and GEMMs differently)."""
    files, reference = shard_files(store), shard_files(expected)
    assert sorted(files) == sorted(reference)
    for name in files:
        if name.endswith(".npy"):
            np.testing.assert_allclose(
                np.load(store / name), np.load(expected / name), rtol=1e-5, atol=1e-5
            )
        else:
            assert files[name] == reference[name], name


def executors(run: Path) -> dict[str, Any]:
    return {
        "processes": LocalExecutor(workers=2),
        "submitit": SlurmExecutor(
            folder=run / "slurm", resources={"cpu": StageResources(timeout_min=5)}, cluster="local"
        ),
    }


@pytest.mark.parametrize("kind", ["processes", "submitit"])
def test_killed_shard_is_the_only_one_redone(manifest, tmp_path, kind, monkeypatch):
    """Shard 1 of 2 is killed mid-write: the stage fails with shard 0 complete (status 1/2); the
    rerun writes shard 1 only (shard 0's files untouched) and the store equals an extraction in
    this process (within float32 rounding); status then shows 2/2."""
    import submitit

    # submitit waits 15 s for the result file of a job that died; 1 s is enough on local disk
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)
    run = tmp_path / "run"
    executor = executors(run)[kind]
    stage = mfcc_stage(manifest, run, mfcc_shard_dies_once)
    with pytest.raises(StageFailedError, match="1 of 2 shard jobs failed"):
        Runner(run, [stage], executor).run()
    store = run / "features"
    done = shard_files(store)
    assert sorted(done) == ["shard-00000-of-00002.index.tsv", "shard-00000-of-00002.npy"]
    (row,) = stage_rows(run)
    assert row.status == "failed" and row.shards == (1, 2)
    stamps = {name: (store / name).stat().st_mtime_ns for name in done}

    Runner(run, [stage], executor).run()
    assert {name: (store / name).stat().st_mtime_ns for name in done} == stamps
    clean = extract_features(manifest, tmp_path / "clean", num_shards=NUM_SHARDS, quiet=True)
    assert_same_store(store, clean)
    state = read_state(run, "mfcc.features")
    assert state.status == "done" and state.attempts == 2 and state.shards == 2
    table = format_table(stage_rows(run)).splitlines()
    assert table[0].split() == ["stage", "status", "duration", "shards", "results"]
    assert table[1].split()[:2] == ["mfcc.features", "done"] and "2/2" in table[1].split()


def test_sharded_transcribe_joins_the_parts(manifest, tmp_path):
    """MFCC then transcription, 2 shards each (in this process: one worker): the units file
    equals the unsharded transcription, the parts folder is gone, status shows 2/2 each."""
    from sslspeech.features import open_store
    from sslspeech.units import transcribe
    from sslspeech.units.kmeans import fit_store

    run = tmp_path / "run"
    mfcc = mfcc_stage(manifest, run)
    fit_store(open_store(extract_features(manifest, tmp_path / "f", quiet=True)), 4, 1.0).save(
        tmp_path / "km.safetensors"
    )
    units = Stage(
        name="mfcc.transcribe",
        function=tasks.transcribe_units,
        inputs={"features": run / "features", "kmeans": tmp_path / "km.safetensors"},
        outputs={"units": run / "units.jsonl"},
        params={"shards": NUM_SHARDS},
        shard_count=tasks.shard_count,
    )
    Runner(run, [mfcc, units], LocalExecutor(workers=1)).run()
    expected = transcribe(tmp_path / "f", tmp_path / "km.safetensors", tmp_path / "u.jsonl")
    assert (run / "units.jsonl").read_text() == expected.read_text()
    assert not (run / "units.jsonl.parts").exists()
    assert [row.shards for row in stage_rows(run)] == [(2, 2), (2, 2)]


def test_shard_count_from_the_recipe_or_the_manifest(manifest, tmp_path, monkeypatch):
    """`[executor] shards` is validated and reaches every per-utterance stage; without it the
    count is one shard per UTTERANCES_PER_SHARD utterances of the manifest."""
    recipe = load_recipe(write(tmp_path, BASE), ["executor.shards=4"])
    stages = {stage.name: stage for stage in build_stages(recipe, tmp_path / "run")}
    sharded = sorted(name for name, stage in stages.items() if stage.shard_count is not None)
    assert sharded == ["it1.features", "it1.transcribe", "mfcc.features", "mfcc.transcribe"]
    assert all(stages[name].params["shards"] == 4 for name in sharded)
    with pytest.raises(ConfigError, match=r"executor\.shards must be positive"):
        load_recipe(write(tmp_path, BASE), ["executor.shards=0"])

    monkeypatch.setattr(tasks, "UTTERANCES_PER_SHARD", 3)
    context = StageContext(
        name="s", run_dir=tmp_path, inputs={"manifest": manifest}, outputs={}, params={}
    )
    assert tasks.shard_count(context) == 3  # 7 utterances
    assert [shard_range(7, 3, i) for i in range(3)] == [(0, 2), (2, 5), (5, 7)]
