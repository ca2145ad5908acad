"""Kaldi-compatible MFCC: equal to the golden fixture (torchaudio.compliance.kaldi + deltas) within
its tolerance, batched = one by one, and the edge cases the fixture README documents."""

from __future__ import annotations

import math

import pytest
import torch

from sslspeech.features import mfcc
from sslspeech.features.mfcc import num_frames
from sslspeech.utils.safetensors import load_file

TOL = {"atol": 2e-3, "rtol": 1e-4}  # fixture.json "tolerance"


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    folder = fixtures_dir / "mfcc" / "kaldi_default"
    return load_file(folder / "inputs.safetensors"), load_file(folder / "expected.safetensors")


@pytest.mark.parametrize("k", range(5))
def test_matches_fixture(fixture, k):
    """MFCC, deltas, delta-deltas and the 39-dim features equal the reference for every input."""
    inputs, expected = fixture
    wav = inputs[f"wav_{k}"]
    features = mfcc(wav)
    torch.testing.assert_close(features, expected[f"features_{k}"], **TOL)
    torch.testing.assert_close(mfcc(wav, deltas=False), expected[f"mfcc_{k}"], **TOL)
    torch.testing.assert_close(features[:, 13:26], expected[f"deltas_{k}"], **TOL)
    torch.testing.assert_close(features[:, 26:], expected[f"ddeltas_{k}"], **TOL)


def test_batched_equals_single(fixture):
    """A zero-padded batch with lengths gives each row's own features and zeros after them."""
    inputs, _ = fixture
    wavs = [inputs[f"wav_{k}"] for k in range(5)]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for row, wav in enumerate(wavs):
        batch[row, : len(wav)] = wav
    out = mfcc(batch, lengths=lengths)
    assert out.shape == (5, num_frames(int(lengths.max())), 39)
    for row, wav in enumerate(wavs):
        single = mfcc(wav)
        torch.testing.assert_close(out[row, : len(single)], single, atol=1e-4, rtol=1e-5)
        assert not out[row, len(single) :].any()


def test_float64_input_agrees(fixture):
    """float64 input is computed in float64 and agrees with the float32 result."""
    inputs, expected = fixture
    out = mfcc(inputs["wav_0"].double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), expected["features_0"], **TOL)


def test_frame_counts_and_short_input():
    """T = 1 + (n - 400) // 160 (snip_edges); fewer than 400 samples give 0 frames, no error."""
    for n, frames in [(0, 0), (1, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)]:
        assert num_frames(n) == frames
        assert mfcc(torch.randn(n) * 0.1).shape == (frames, 39)
    assert mfcc(torch.randn(300), deltas=False).shape == (0, 13)
    assert mfcc(torch.randn(3, 300), lengths=torch.tensor([300, 10, 0])).shape == (3, 0, 39)
    assert num_frames(torch.tensor([399, 400, 560])).tolist() == [0, 1, 2]


def test_one_frame_has_zero_deltas():
    """With a single frame the deltas and delta-deltas are 0 (replicate padding)."""
    out = mfcc(torch.randn(450) * 0.1)
    assert out.shape == (1, 39)
    assert not out[:, 13:].any()


def test_digital_silence():
    """All-zero frames floor every log-mel at ln(eps): c0 = sqrt(23) ln(eps), the rest 0."""
    out = mfcc(torch.zeros(1600), deltas=False)
    c0 = math.sqrt(23) * math.log(torch.finfo(torch.float32).eps)
    torch.testing.assert_close(out[:, 0], torch.full((out.shape[0],), c0), atol=1e-3, rtol=0)
    assert out[:, 1:].abs().max() < 1e-3


def test_bad_input_errors():
    """Integer tensors, 3-D input and lengths beyond the width are rejected with a message."""
    with pytest.raises(TypeError, match="floating-point"):
        mfcc(torch.zeros(1000, dtype=torch.int16))
    with pytest.raises(ValueError, match="Expected"):
        mfcc(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="lengths"):
        mfcc(torch.zeros(2, 1000), lengths=torch.tensor([1000, 1001]))
