"""Sharded extraction: MFCC and model-layer features of a manifest equal the direct computation;
a crash (exception or killed process) in the middle, then a rerun, gives the same files as an
uninterrupted run; process pool and submitit arrays give the same files too."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sslspeech.data.audio import load_audio, standardize, write_wav
from sslspeech.data.manifest import ManifestEntry, write_manifest
from sslspeech.errors import ConfigError, DataError
from sslspeech.features import mfcc, open_store
from sslspeech.features.batching import batched_layers, length_batches
from sslspeech.features.extract import (
    FeatureSpec,
    extract_features,
    extract_shard,
    shard_range,
)

# < 400: 0 MFCC frames; for the tiny model (receptive field 60, stride 40) 40 is 0 frames, 80 one
LENGTHS = [16000, 5000, 350, 12345, 800, 9000, 401, 40, 80]


@pytest.fixture
def manifest(tmp_path) -> Path:
    """Eight short WAVs (tones + noise) and their CSV manifest."""
    rng = np.random.default_rng(0)
    entries = []
    for i, n in enumerate(LENGTHS):
        t = np.arange(n) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(n)
        path = tmp_path / "wav" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        write_wav(path, wav.astype(np.float32))
        entries.append(ManifestEntry(f"u{i}", str(path), n))
    write_manifest(entries, tmp_path / "manifest.csv")
    return tmp_path / "manifest.csv"


def files(directory: Path) -> dict[str, bytes]:
    """Every visible file of a folder and its bytes, minus store.json (holds absolute paths)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "store.json"
    }


def test_shard_ranges_cover_everything():
    """fairseq's rounding: contiguous, disjoint, complete."""
    for total in (0, 1, 7, 100):
        for n in (1, 3, 8):
            ranges = [shard_range(total, n, i) for i in range(n)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_mfcc_store_equals_direct(manifest, tmp_path):
    """Each stored array is mfcc(load_audio(file)); store.json says what was extracted."""
    out = extract_features(manifest, tmp_path / "feats", num_shards=3, quiet=True)
    store = open_store(out)
    assert list(store) == [f"u{i}" for i in range(len(LENGTHS))]
    for i in range(len(LENGTHS)):
        wav = torch.from_numpy(load_audio(tmp_path / "wav" / f"u{i}.wav"))
        np.testing.assert_array_equal(store[f"u{i}"], mfcc(wav).numpy())
    assert store["u2"].shape == (0, 39)
    assert store.meta["kind"] == "mfcc" and store.frame_rate == 100.0


class CrashError(Exception):
    pass


def crash_at(index: int):
    def hook(i: int) -> None:
        if i == index:
            raise CrashError

    return hook


def test_crash_then_rerun_gives_identical_files(manifest, tmp_path):
    """An exception in shard 1 leaves shard 0 complete and no trace of shard 1; the rerun
    completes the store with files byte-identical to an uninterrupted run."""
    clean = extract_features(manifest, tmp_path / "clean", num_shards=3, quiet=True)
    crashed = tmp_path / "crashed"
    spec = FeatureSpec()
    assert extract_shard(manifest, crashed, spec, 0, 3, quiet=True)
    with pytest.raises(CrashError):
        extract_shard(manifest, crashed, spec, 1, 3, quiet=True, on_utterance=crash_at(3))
    assert sorted(files(crashed)) == ["shard-00000-of-00003.index.tsv", "shard-00000-of-00003.npy"]
    assert not any(p.name.endswith(".tmp") for p in crashed.iterdir())
    with pytest.raises(DataError, match="incomplete"):
        open_store(crashed)
    extract_features(manifest, crashed, num_shards=3, quiet=True)
    assert files(crashed) == files(clean)


def test_killed_process_then_rerun(manifest, tmp_path):
    """A process killed mid-shard (no cleanup at all) is recovered by a rerun: same files, and
    the dead writer's temporary files are removed."""
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os
        from sslspeech.features.extract import FeatureSpec, extract_shard
        def die(i):
            if i == 4:
                os._exit(9)
        extract_shard({str(manifest)!r}, {str(out)!r}, FeatureSpec(), 0, 2, quiet=True)
        extract_shard({str(manifest)!r}, {str(out)!r}, FeatureSpec(), 1, 2, quiet=True,
                      on_utterance=die)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    assert any(p.name.endswith(".tmp") for p in out.iterdir())
    extract_features(manifest, out, num_shards=2, quiet=True)
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    clean = extract_features(manifest, tmp_path / "clean", num_shards=2, quiet=True)
    assert files(out) == files(clean)


def test_pool_and_submitit_match_sequential(manifest, tmp_path):
    """A 2-process pool and a submitit DebugExecutor array write the same files."""
    import submitit

    sequential = extract_features(manifest, tmp_path / "seq", num_shards=3, quiet=True)
    pooled = extract_features(manifest, tmp_path / "pool", num_shards=3, workers=2, quiet=True)
    executor = submitit.DebugExecutor(folder=tmp_path / "logs")
    arrayed = extract_features(manifest, tmp_path / "array", num_shards=3, executor=executor)
    assert files(pooled) == files(sequential) == files(arrayed)


def test_single_shard_job_and_skip(manifest, tmp_path):
    """--shard i/n writes only that shard; a rerun of a complete shard does nothing."""
    out = tmp_path / "feats"
    extract_features(manifest, out, shard=1, num_shards=2, quiet=True)
    assert sorted(files(out)) == ["shard-00001-of-00002.index.tsv", "shard-00001-of-00002.npy"]
    before = (out / "shard-00001-of-00002.npy").stat().st_mtime_ns
    assert not extract_shard(manifest, out, FeatureSpec(), 1, 2)
    assert (out / "shard-00001-of-00002.npy").stat().st_mtime_ns == before
    with pytest.raises(DataError, match="num_shards"):
        extract_features(manifest, out, num_shards=3, quiet=True)


def tiny_hubert(normalize_input: bool):
    from sslspeech.models.configs import HuBERTConfig
    from sslspeech.models.hubert import HuBERT

    config = HuBERTConfig(
        extractor_conv_layers=((16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 2, 2)),
        embed_dim=24,
        ffn_dim=48,
        num_layers=3,
        num_heads=3,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        normalize_input=normalize_input,
    )
    torch.manual_seed(0)
    return HuBERT(config).eval()


@pytest.mark.parametrize("normalize_input", [False, True])
@pytest.mark.parametrize("before_residual", [True, False])
def test_model_layer_features(manifest, tmp_path, normalize_input, before_residual):
    """Layer L of a saved tiny HuBERT, with the checkpoint's input normalization, as the model
    computes it on each utterance alone (batches of mixed lengths: 2 per batch, and all)."""
    model = tiny_hubert(normalize_input)
    model.save_pretrained(tmp_path / "ckpt")
    out = extract_features(
        manifest,
        tmp_path / "feats",
        kind="model",
        checkpoint=tmp_path / "ckpt",
        layer=2,
        before_residual=before_residual,
        num_shards=2,
        batch_samples=2 * 16000 if normalize_input else None,
        quiet=True,
    )
    store = open_store(out)
    assert store.meta["normalize_input"] is normalize_input
    assert store.frame_rate == 16000 / 40
    for i in (0, 1, 3, 4, 5, 6, 8):
        wav = torch.from_numpy(load_audio(tmp_path / "wav" / f"u{i}.wav"))
        if normalize_input:
            wav = standardize(wav)
        with torch.inference_mode():
            layers = model.get_intermediate_outputs(
                wav[None], num_layers=2, before_residual=before_residual
            )
        np.testing.assert_allclose(store[f"u{i}"], layers[1][0].numpy(), atol=1e-5, rtol=1e-5)
    assert store["u7"].shape == (0, 24)  # shorter than the conv stack's receptive field
    assert store["u8"].shape == (1, 24)


def test_model_errors(manifest, tmp_path):
    """Model features need a checkpoint and an existing 1-based layer."""
    with pytest.raises(ConfigError, match="checkpoint and a layer"):
        extract_features(manifest, tmp_path / "a", kind="model")
    tiny_hubert(False).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="has 3 layers"):
        extract_features(
            manifest, tmp_path / "b", kind="model", checkpoint=tmp_path / "ckpt", layer=4
        )
    with pytest.raises(ConfigError, match="kind"):
        extract_features(manifest, tmp_path / "c", kind="fbank")


def test_length_batches_sort_and_respect_the_budget():
    """Longest first, rows x longest <= budget, every index once; an over-long one alone."""
    lengths = [5, 50, 7, 30, 30, 1, 200]
    batches = length_batches(lengths, 60)
    assert batches == [[6], [1], [3, 4], [2, 0, 5]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    with pytest.raises(ConfigError, match="batch_samples"):
        length_batches(lengths, 0)


def tiny_encoder_model(kind: str):
    """Tiny models covering the padding hazards: GroupNorm conv stack (HuBERT), per-frame
    LayerNorm with fairseq's batch-dependent frame rule, unzeroed padding (DinoSR)."""
    from sslspeech.models.configs import HuBERTConfig
    from sslspeech.models.dinosr import DinoSR, DinoSRConfig
    from sslspeech.models.hubert import HuBERT

    shape = {
        "extractor_conv_layers": ((16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 2, 2)),
        "embed_dim": 24,
        "ffn_dim": 48,
        "num_layers": 2,
        "num_heads": 3,
        "pos_conv_kernel": 8,
        "pos_conv_groups": 4,
    }
    torch.manual_seed(0)
    if kind == "dinosr":
        return DinoSR(DinoSRConfig(**shape, num_codebooks=2, codebook_size=8)).eval()
    extra = {"extractor_mode": "layer_norm", "frame_rule": "fairseq"} if kind == "ln" else {}
    return HuBERT(HuBERTConfig(**shape, **extra)).eval()


@pytest.mark.parametrize("kind", ["hubert", "ln", "dinosr"])
@pytest.mark.parametrize("batch_samples", [None, 3000])
def test_batched_layers_equal_one_at_a_time(kind, batch_samples):
    """Mixed lengths (1 frame, 0 frames, long) in batches: each requested layer (in the order
    asked) of every utterance, yielded once, equals its own forward pass within 1e-5."""
    model = tiny_encoder_model(kind)
    rng = torch.Generator().manual_seed(0)
    lengths = [1234, 60, 4000, 40, 999, 4000, 61, 2500]
    waveforms = [torch.randn(n, generator=rng) for n in lengths]
    found = list(
        batched_layers(model, waveforms, [2, 1], before_residual=False, batch_samples=batch_samples)
    )
    assert sorted(index for index, _ in found) == list(range(len(lengths)))
    for index, (second, first) in found:
        wav, layers = waveforms[index], [first, second]
        if len(wav) < 60:
            assert [tuple(x.shape) for x in layers] == [(0, 24), (0, 24)]
            continue
        with torch.inference_mode():
            alone = model.get_intermediate_outputs(wav[None], num_layers=2, before_residual=False)
        for got, expected in zip(layers, alone, strict=True):
            torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-5)


def test_features_command_batches_model_layers(manifest, tmp_path):
    """`sslspeech features --kind model --batch-samples N` writes the same store as the API
    with its default batches; a budget below one sample is refused."""
    from sslspeech.cli import main

    tiny_hubert(False).save_pretrained(tmp_path / "ckpt")
    common = ["--kind", "model", "--checkpoint", str(tmp_path / "ckpt"), "--layer", "2"]
    argv = ["features", str(manifest), str(tmp_path / "cli"), *common, "--quiet"]
    assert main([*argv, "--batch-samples", "6000"]) == 0
    api = extract_features(
        manifest, tmp_path / "api", kind="model", checkpoint=tmp_path / "ckpt", layer=2, quiet=True
    )
    cli, expected = open_store(tmp_path / "cli"), open_store(api)
    for fileid in expected:
        np.testing.assert_allclose(cli[fileid], expected[fileid], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="batch-samples"):
        extract_features(manifest, tmp_path / "bad", batch_samples=0)
