"""The 22050 -> 16000 Hz polyphase resampler equals scipy.signal.resample_poly (its default
Kaiser filter) to rounding, for every length including the empty and very short ones."""

from __future__ import annotations

import numpy as np
import pytest

from sslspeech.synth.resample import resample_poly

signal = pytest.importorskip("scipy.signal")


@pytest.mark.parametrize("n", [1, 2, 5, 440, 441, 442, 1000, 22050, 30011])
@pytest.mark.parametrize("ratio", [(320, 441), (2, 3), (3, 2)])
def test_matches_scipy(n, ratio):
    x = np.random.default_rng(n).normal(size=n)
    expected = signal.resample_poly(x, *ratio)
    out = resample_poly(x, *ratio)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-12, rtol=0)


def test_empty_and_errors():
    assert resample_poly(np.zeros(0), 320, 441).shape == (0,)
    with pytest.raises(ValueError, match="Expected"):
        resample_poly(np.zeros((2, 3)), 320, 441)
