"""Audio decoding: files and tar byte ranges, format checks, resampling, standardization."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sslspeech.data.audio import audio_info, load_audio, resample_audio, standardize
from sslspeech.data.manifest import ManifestEntry
from sslspeech.errors import DataError

from .conftest import RATE, make_tar, tone


def test_wav_flac_ogg_mp3_decode_to_mono_float32(corpus) -> None:
    """Every format decodes to float32 mono, equal to what soundfile reads (lossy decoders may
    differ by float rounding between read calls, hence the 1e-6 tolerance)."""
    root, _ = corpus
    for name in ("spk1/ch1/a.wav", "spk2/f.flac", "spk2/g.ogg", "spk2/h.mp3"):
        wav = load_audio(root / name)
        reference, rate = sf.read(root / name, dtype="float32")
        assert rate == RATE and wav.dtype == np.float32 and wav.ndim == 1
        np.testing.assert_allclose(wav, reference, rtol=0, atol=1e-6)


def test_tar_member_equals_file(corpus, tmp_path: Path) -> None:
    """A tar member read through its byte range decodes to the same samples as the file."""
    root, _ = corpus
    tar_path = tmp_path / "c.tar"
    make_tar(root, tar_path)
    with tarfile.open(tar_path) as archive:
        member = archive.getmember("spk2/f.flac")
    entry = ManifestEntry(
        "spk2/f", member.name, 4800, str(tar_path), member.offset_data, member.size
    )
    np.testing.assert_array_equal(load_audio(entry), load_audio(root / "spk2/f.flac"))
    assert audio_info(entry).num_samples == 4800
    segment = load_audio(entry, offset=100, num_frames=50)
    np.testing.assert_array_equal(segment, load_audio(root / "spk2/f.flac")[100:150])


def test_rate_and_channels_are_errors_unless_asked(tmp_path: Path) -> None:
    """8 kHz and stereo raise DataError naming the file and the fix; resample/downmix work."""
    sf.write(tmp_path / "s.wav", tone(1600, 1, channels=2), RATE, subtype="FLOAT")
    sf.write(tmp_path / "r.wav", tone(800, 2), 8000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"s\.wav: 2 channels.*downmix=True"):
        load_audio(tmp_path / "s.wav")
    with pytest.raises(DataError, match=r"r\.wav: sample rate 8000 Hz.*resample=True"):
        load_audio(tmp_path / "r.wav")
    np.testing.assert_allclose(
        load_audio(tmp_path / "s.wav", downmix=True), tone(1600, 1), atol=1e-7
    )
    assert load_audio(tmp_path / "r.wav", resample=True).shape == (1600,)


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    """Garbage bytes and missing files raise DataError naming the path."""
    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(DataError, match=r"bad\.wav: cannot decode"):
        load_audio(tmp_path / "bad.wav")
    with pytest.raises(DataError, match=r"missing\.wav"):
        load_audio(tmp_path / "missing.wav")


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resample_matches_analytic_tones(orig: int) -> None:
    """Tones in the pass band come out as the same tones at 16 kHz (error < 1e-4)."""
    t = np.arange(orig) / orig
    x = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t + 0.3)
    y = resample_audio(torch.tensor(x, dtype=torch.float32), orig, RATE).numpy()
    t16 = np.arange(len(y)) / RATE
    expected = np.sin(2 * np.pi * 440 * t16) + 0.5 * np.sin(2 * np.pi * 3000 * t16 + 0.3)
    assert len(y) == RATE
    assert np.abs(y - expected)[400:-400].max() < 1e-4


def test_resample_removes_content_above_new_nyquist() -> None:
    """A 10 kHz tone at 48 kHz is above 8 kHz: after resampling to 16 kHz it is gone (< -80 dB)."""
    t = np.arange(48000) / 48000
    y = resample_audio(
        torch.tensor(np.sin(2 * np.pi * 10000 * t), dtype=torch.float32), 48000, RATE
    )
    assert y[400:-400].abs().max() < 1e-4


def test_standardize_is_layer_norm_per_utterance() -> None:
    """standardize gives zero mean, unit variance for numpy and torch inputs, keeping the type."""
    x = np.random.default_rng(0).normal(3.0, 2.0, 5000).astype(np.float32)
    y = standardize(x)
    assert isinstance(y, np.ndarray)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-3
    batch = torch.tensor(np.stack([x, 2 * x + 1]))
    np.testing.assert_allclose(standardize(batch)[1].numpy(), y, atol=1e-4)
    assert load_audio is not None
