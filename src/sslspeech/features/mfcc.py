"""Kaldi-compatible MFCC (+ deltas, delta-deltas) in pure torch, batched.

Same options and numbers as `torchaudio.compliance.kaldi.mfcc(x, use_energy=False)` followed by
`compute_deltas` twice, which is what fairseq's HuBERT MFCC dump computes: 25 ms povey windows
every 10 ms (`snip_edges`), DC removal, pre-emphasis 0.97, 512-point FFT power spectrum, 23 Kaldi
mel bins from 20 Hz to Nyquist, log floored at float32 eps, orthonormal DCT-II to 13 coefficients,
cepstral lifter 22, no dither and no energy coefficient.
"""

from __future__ import annotations

import functools
import math

import torch

NUM_CEPS = 13
NUM_MEL_BINS = 23
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22.0
DELTA_WINDOW = 2  # frames on each side: win_length 5, as torchaudio.functional.compute_deltas


def window_size(sample_rate: int = 16000) -> int:
    """Samples per 25 ms analysis window."""
    return int(sample_rate * 0.025)


def window_shift(sample_rate: int = 16000) -> int:
    """Samples per 10 ms hop."""
    return int(sample_rate * 0.010)


def num_frames(num_samples: int | torch.Tensor, sample_rate: int = 16000) -> int | torch.Tensor:
    """Frames Kaldi makes from `num_samples` (`snip_edges`): 0 below one window (W samples),
    else 1 + (n - W) // S. Works on ints and on integer tensors (elementwise).
    """
    size, shift = window_size(sample_rate), window_shift(sample_rate)
    if isinstance(num_samples, torch.Tensor):
        return torch.where(
            num_samples >= size,
            torch.div(num_samples - size, shift, rounding_mode="floor") + 1,
            torch.zeros_like(num_samples),
        )
    return 0 if num_samples < size else 1 + (num_samples - size) // shift


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


@functools.lru_cache(maxsize=8)
def _constants(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(povey window (W,), mel banks (F//2 + 1, mel bins), DCT x lifter (mel bins, ceps), F)."""
    size = window_size(sample_rate)
    fft_size = 1 << (size - 1).bit_length()
    n = torch.arange(size, dtype=torch.float64)
    window = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (size - 1))) ** 0.85

    # Triangular filters, linear in Kaldi's mel scale, sampled at the FFT bin frequencies; the
    # Nyquist bin gets weight 0, as in Kaldi.
    mel_low = _mel(torch.tensor(LOW_FREQ, dtype=torch.float64))
    mel_high = _mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    edges = mel_low + delta * torch.arange(NUM_MEL_BINS + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _mel(torch.arange(fft_size // 2, dtype=torch.float64) * sample_rate / fft_size)
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (mel bins, F/2)
    banks = torch.cat([banks, torch.zeros(NUM_MEL_BINS, 1, dtype=torch.float64)], dim=1)

    # Orthonormal DCT-II (mel bins -> ceps) with the cepstral lifter folded in.
    k = torch.arange(NUM_CEPS, dtype=torch.float64)
    m = torch.arange(NUM_MEL_BINS, dtype=torch.float64)
    dct = torch.cos(math.pi / NUM_MEL_BINS * (m[:, None] + 0.5) * k[None, :])
    dct *= math.sqrt(2.0 / NUM_MEL_BINS)
    dct[:, 0] = math.sqrt(1.0 / NUM_MEL_BINS)
    lifter = 1.0 + 0.5 * CEPSTRAL_LIFTER * torch.sin(math.pi * k / CEPSTRAL_LIFTER)
    return window, banks.T.contiguous(), dct * lifter, fft_size


def _cepstra(frames: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """[batch, frame, window] samples -> [batch, frame, 13] liftered cepstra."""
    window, banks, dct, fft_size = _constants(sample_rate)
    dtype, device = frames.dtype, frames.device
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - PREEMPHASIS * previous) * window.to(device, dtype)
    spectrum = torch.fft.rfft(frames, n=fft_size).abs().pow(2)
    mel = spectrum @ banks.to(device, dtype)
    log_mel = torch.clamp(mel, min=torch.finfo(torch.float32).eps).log()
    return log_mel @ dct.to(device, dtype)


def compute_deltas(features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Regression deltas over +-2 frames, edges replicated at each row's own last valid frame.

    `features` is [batch, frame, dim]; frames past `frame_lengths` are ignored (and zero).
    """
    batch, frames, _ = features.shape
    if frames == 0:
        return features.clone()
    t = torch.arange(frames, device=features.device)
    last = (frame_lengths.to(features.device) - 1).clamp(min=0)[:, None]
    out = torch.zeros_like(features)
    for j in range(1, DELTA_WINDOW + 1):
        ahead = torch.minimum((t + j)[None, :].expand(batch, -1), last)
        behind = torch.minimum((t - j).clamp(min=0)[None, :].expand(batch, -1), last)
        gather = features.gather(1, ahead[..., None].expand_as(features))
        gather = gather - features.gather(1, behind[..., None].expand_as(features))
        out = out + j * gather
    norm = 2 * sum(j * j for j in range(1, DELTA_WINDOW + 1))
    valid = t[None, :] < frame_lengths.to(features.device)[:, None]
    return (out / norm) * valid[..., None]


def mfcc(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    deltas: bool = True,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """MFCC of float waveforms in [-1, 1]: (N,) -> (T, 39), or (B, N) -> (B, T, 39).

    Without `deltas` the last dim is 13. `lengths` (B,) gives the valid samples per row of a
    padded batch; rows then have `num_frames(lengths)` valid frames and zeros after them, and T
    is the largest of those. Fewer samples than one window (25 ms) give 0 frames.
    """
    if not torch.is_tensor(waveform) or not waveform.is_floating_point():
        raise TypeError("mfcc expects a floating-point torch.Tensor waveform in [-1, 1]")
    if waveform.dim() == 1:
        if lengths is not None:
            raise ValueError("lengths is only for a batch: Expected (batch, time) with lengths")
        return mfcc(waveform[None], sample_rate, deltas)[0]
    if waveform.dim() != 2:
        raise ValueError(f"Expected (time,) or (batch, time). Found: {tuple(waveform.shape)}")
    batch, width = waveform.shape
    if lengths is None:
        lengths = torch.full((batch,), width, dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    if lengths.shape != (batch,) or bool((lengths > width).any()) or bool((lengths < 0).any()):
        raise ValueError(f"lengths must be (batch,) within [0, {width}]; got {lengths.tolist()}")
    frame_lengths = num_frames(lengths, sample_rate)
    assert isinstance(frame_lengths, torch.Tensor)
    total = int(frame_lengths.max()) if batch else 0
    dim = 3 * NUM_CEPS if deltas else NUM_CEPS
    if total == 0:
        return waveform.new_zeros(batch, 0, dim)
    size, shift = window_size(sample_rate), window_shift(sample_rate)
    frames = waveform[:, : (total - 1) * shift + size].unfold(1, size, shift)
    ceps = _cepstra(frames, sample_rate)
    valid = torch.arange(total)[None, :] < frame_lengths[:, None]
    ceps = ceps * valid.to(ceps.device)[..., None]
    if not deltas:
        return ceps
    first = compute_deltas(ceps, frame_lengths)
    second = compute_deltas(first, frame_lengths)
    return torch.cat([ceps, first, second], dim=-1)
