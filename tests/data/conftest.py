"""Audio corpora made on the fly for the data tests (tiny real files; nothing downloaded)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 16_000


def tone(num_samples: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A reproducible noisy tone in [-0.5, 0.5] (exactly representable enough for PCM_16)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / RATE
    wav = 0.3 * np.sin(2 * np.pi * (200 + 20 * seed) * t) + 0.05 * rng.standard_normal(num_samples)
    wav = wav.astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def make_corpus(root: Path) -> dict[str, int]:
    """Nested dirs of WAV/FLAC/OGG/MP3 files; returns fileid -> num_samples of the .wav ones."""
    sizes = {}
    layout = {"spk1/ch1/a": 4000, "spk1/ch1/b": 5600, "spk1/ch2/c": 3200, "spk2/d": 8000, "e": 1600}
    for number, (fileid, size) in enumerate(layout.items()):
        path = root / f"{fileid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(size, number), RATE, subtype="PCM_16")
        sizes[fileid] = size
    sf.write(root / "spk2" / "f.flac", tone(4800, 7), RATE, subtype="PCM_16")
    sf.write(root / "spk2" / "g.ogg", tone(4800, 8), RATE, format="OGG", subtype="VORBIS")
    sf.write(root / "spk2" / "h.mp3", tone(4800, 9), RATE, format="MP3", subtype="MPEG_LAYER_III")
    (root / "notes.txt").write_text("not audio")
    return sizes


def make_tar(root: Path, tar_path: Path) -> None:
    """An uncompressed tar of every file under `root` (names relative to `root`)."""
    with tarfile.open(tar_path, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(root)))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    root = tmp_path / "corpus"
    root.mkdir()
    return root, make_corpus(root)


@pytest.fixture
def bad_corpus(tmp_path: Path) -> Path:
    """Two good files and one of each problem `check` must find."""
    root = tmp_path / "bad"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "good1.wav", tone(3200, 1), RATE, subtype="PCM_16")
    sf.write(root / "sub" / "good2.flac", tone(4000, 2), RATE, subtype="PCM_16")
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage-not-a-fmt-chunk" * 3)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), RATE, subtype="PCM_16")
    sf.write(root / "stereo.wav", tone(3200, 3, channels=2), RATE, subtype="PCM_16")
    sf.write(root / "sub" / "rate8k.wav", tone(1600, 4), 8000, subtype="PCM_16")
    nan = tone(3200, 5)
    nan[100] = np.nan
    nan[200] = np.inf
    sf.write(root / "nan.wav", nan, RATE, subtype="FLOAT")
    return root
