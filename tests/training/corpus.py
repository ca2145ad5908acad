"""A tiny learnable corpus for training tests: utterances of pure tones, one label per 20 ms
frame naming the tone (so masked prediction has something to learn), written as WAV files and
a manifest with a units column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
HOP = 320  # samples per 50 Hz label
FREQUENCIES = (220.0, 330.0, 440.0, 550.0, 660.0, 880.0, 990.0, 1320.0)


def tone_utterance(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, list[int]]:
    """A waveform of `num_frames` * 320 samples made of tone segments, and its frame labels."""
    labels: list[int] = []
    while len(labels) < num_frames:
        tone = int(rng.integers(len(FREQUENCIES)))
        labels.extend([tone] * int(rng.integers(4, 12)))
    labels = labels[:num_frames]
    t = np.arange(num_frames * HOP) / SAMPLE_RATE
    freq = np.repeat([FREQUENCIES[k] for k in labels], HOP)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    wav = 0.5 * np.sin(phase) + 0.01 * rng.standard_normal(len(t))
    return wav.astype(np.float32), labels


def make_tone_corpus(
    folder: Path,
    num_utterances: int = 24,
    seed: int = 0,
    min_frames: int = 25,
    max_frames: int = 60,
) -> Path:
    """Write WAVs and `manifest.csv` (with units) under `folder`; returns the manifest path."""
    from sslspeech.data.audio import write_wav
    from sslspeech.data.manifest import ManifestEntry, write_manifest

    rng = np.random.default_rng(seed)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(num_utterances):
        wav, labels = tone_utterance(rng, int(rng.integers(min_frames, max_frames + 1)))
        path = folder / "wav" / f"utt{index:03d}.wav"
        write_wav(path, wav)
        entries.append(ManifestEntry(f"utt{index:03d}", str(path), len(wav), units=tuple(labels)))
    manifest = folder / "manifest.csv"
    write_manifest(entries, manifest)
    return manifest
