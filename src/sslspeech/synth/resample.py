"""Polyphase rational resampling in numpy (espeak's 22050 Hz -> 16 kHz is up 320, down 441).

The filter is the one `scipy.signal.resample_poly` designs by default (a Kaiser-windowed sinc,
beta 5, 10 zero crossings per side of the slower rate, unit DC gain), and the output is aligned
the same way (no delay, ceil(n * up / down) samples), so results agree with scipy to rounding.
Each output sample is a dot product of about 28 input samples with one of `up` filter phases.
"""

from __future__ import annotations

import functools
import math

import numpy as np

KAISER_BETA = 5.0
ZERO_CROSSINGS = 10


@functools.lru_cache(maxsize=4)
def _polyphase(up: int, down: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input base (up,), tap weights (taps, up), left padding) for one block of `up` outputs.

    Output `q * up + r` is `sum_t x[q * down + base[r] - t] * weights[t, r]`.
    """
    rate = max(up, down)
    half = ZERO_CROSSINGS * rate
    taps = np.arange(2 * half + 1) - half
    kernel = np.sinc(taps / rate) * np.kaiser(2 * half + 1, KAISER_BETA)
    kernel *= up / kernel.sum()
    r = np.arange(up)
    base = (r * down + half) // up
    phase = (r * down + half) % up
    per_phase = -(-(2 * half + 1) // up)
    index = phase[None, :] + up * np.arange(per_phase)[:, None]
    weights = np.where(index <= 2 * half, kernel[np.minimum(index, 2 * half)], 0.0)
    return base, weights, np.array(per_phase - 1)


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample a 1-D signal by `up / down` (float64 out, length ceil(len(x) * up / down))."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"Expected (time,). Found: {x.shape}")
    n_out = -(-len(x) * up // down)
    if n_out == 0:
        return np.zeros(0)
    base, weights, left = _polyphase(up, down)
    pad = int(left)
    blocks = -(-n_out // up)
    starts = (np.arange(blocks) * down)[:, None] + base[None, :] + pad  # (blocks, up)
    padded = np.zeros(max(int(starts.max()) + 1, pad + len(x)))
    padded[pad : pad + len(x)] = x
    out = np.zeros((blocks, up))
    for t in range(weights.shape[0]):
        out += padded[starts - t] * weights[t]
    return out.reshape(-1)[:n_out]
