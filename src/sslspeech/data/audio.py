"""Audio decoding with soundfile, from files or from byte ranges of an uncompressed tar.

Archives are read with `os.pread` on one cached file descriptor per archive and per process:
no seek position is shared, so threads and forked DataLoader workers can read concurrently
(after a fork the child drops the cache and opens its own descriptors).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from sslspeech.data.manifest import ManifestEntry
from sslspeech.errors import DataError

SAMPLE_RATE = 16_000
AudioSource = ManifestEntry | str | os.PathLike[str]
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """Header facts of one audio file (no decoding)."""

    num_samples: int
    sample_rate: int
    channels: int


class _ArchiveHandles:
    """Open archive descriptors of this process, keyed by path."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def fd(self, archive: str) -> int:
        fd = self._fds.get(archive)
        if fd is None:
            with self._lock:
                fd = self._fds.get(archive)
                if fd is None:
                    try:
                        fd = os.open(archive, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    except OSError as error:
                        raise DataError(f"{archive}: cannot open archive ({error})") from None
                    self._fds[archive] = fd
        return fd

    def forget_after_fork(self) -> None:
        """In a forked child: drop (and close our copies of) the parent's descriptors."""
        for fd in self._fds.values():
            with contextlib.suppress(OSError):  # the child's copy may already be closed
                os.close(fd)
        self._fds = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}


_HANDLES = _ArchiveHandles()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HANDLES.forget_after_fork)


def close_archives() -> None:
    """Close every archive descriptor this process holds (they reopen on demand)."""
    _HANDLES.close()


def read_range(archive: str, offset: int, size: int) -> bytes:
    """The bytes `archive[offset : offset + size]`, read without moving any file position."""
    if offset < 0 or size < 0:
        raise DataError(
            f"{archive}: byte range {offset}+{size} is negative; the manifest is corrupt "
            "(re-run `sslspeech manifest` on the archive)"
        )
    fd = _HANDLES.fd(archive)
    chunks: list[bytes] = []
    done = 0
    while done < size:
        chunk = os.pread(fd, size - done, offset + done)
        if not chunk:
            raise DataError(
                f"{archive}: byte range {offset}+{size} ends past the end of the archive "
                "(truncated archive or stale manifest; re-run `sslspeech manifest`)"
            )
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of `archive[offset : offset + size]` (for header-only reads)."""

    def __init__(self, archive: str, offset: int, size: int) -> None:
        super().__init__()
        self._archive, self._offset, self._size = archive, offset, size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._size - self._position)
        if count <= 0:
            return 0
        data = read_range(self._archive, self._offset + self._position, count)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def _describe(source: AudioSource) -> str:
    if isinstance(source, ManifestEntry):
        if source.archive is not None:
            return f"{source.archive}[{source.path} @ {source.byte_offset}+{source.byte_size}]"
        return source.path
    return str(source)


def _unopenable(path: str) -> DataError | None:
    """Why soundfile cannot open `path` by name (a file name that is not UTF-8, a missing file,
    a dangling symlink) instead of libsndfile's "System error."; None when the file is there."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return DataError(
            f"{path!r}: the file name is not valid UTF-8 (manifests and libsndfile need UTF-8); "
            "rename it (e.g. `convmv -f latin1 -t utf8 --notest FILE`) and rebuild the manifest"
        )
    file = Path(path)
    if file.is_file():
        return None
    link = f" (a symlink to {file.readlink()}, which does not exist)" if file.is_symlink() else ""
    return DataError(
        f"{path}: no such audio file{link}; restore it or rebuild the manifest with "
        "`sslspeech manifest`"
    )


def not_audio(source: AudioSource, error: Exception, what: str) -> DataError:
    """The error for a source soundfile refused: a missing or misnamed file, bytes of a tar that
    are not audio (a stale manifest), or what libsndfile said."""
    reason = getattr(error, "error_string", None) or str(error)
    if isinstance(source, ManifestEntry) and source.archive is not None:
        return DataError(
            f"{source.archive}: the {source.byte_size} bytes at offset {source.byte_offset} "
            f"(member {source.path}) are not audio ({reason}); the manifest may be stale: "
            "re-run `sslspeech manifest` on the archive"
        )
    path = source.path if isinstance(source, ManifestEntry) else os.fspath(source)
    return _unopenable(path) or DataError(f"{_describe(source)}: {what} ({reason})")


def _open_source(source: AudioSource, whole: bool) -> str | BinaryIO:
    """What soundfile should open: a path, the member's bytes, or a lazy range view."""
    if isinstance(source, ManifestEntry):
        if source.archive is None:
            return source.path
        offset, size = source.byte_offset or 0, source.byte_size or 0
        if whole:
            return io.BytesIO(read_range(source.archive, offset, size))
        return io.BufferedReader(RangeFile(source.archive, offset, size))
    return os.fspath(source)


def audio_info(source: AudioSource) -> AudioInfo:
    """Sample count, rate and channels from the header only (tar members through a range view)."""
    import soundfile as sf

    try:
        with sf.SoundFile(_open_source(source, whole=False)) as handle:
            return AudioInfo(handle.frames, handle.samplerate, handle.channels)
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as error:
        raise not_audio(source, error, "unreadable audio header") from None


def decode(source: AudioSource, *, offset: int = 0, num_frames: int = -1) -> tuple[np.ndarray, int]:
    """Decode to float32 `(frames, channels)` at the file's own rate; returns (audio, rate)."""
    import soundfile as sf

    try:
        partial = offset > 0 or num_frames >= 0
        with sf.SoundFile(_open_source(source, whole=not partial)) as handle:
            if offset:
                handle.seek(offset)
            audio = handle.read(num_frames, dtype="float32", always_2d=True)
            return audio, handle.samplerate
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as error:
        raise not_audio(source, error, "cannot decode audio") from None


def load_audio(
    source: AudioSource,
    *,
    sample_rate: int = SAMPLE_RATE,
    resample: bool = False,
    downmix: bool = False,
    normalize: bool = False,
    offset: int = 0,
    num_frames: int = -1,
) -> np.ndarray:
    """Decode a file, path or manifest entry (tar members by byte range) to mono float32.

    A file at another rate or with several channels is a DataError unless `resample` /
    `downmix` is set, and so is one with NaN/inf samples. `offset`/`num_frames` read a segment
    (in the file's own samples). `normalize` standardizes the result to zero mean and unit
    variance (`standardize`).
    """
    audio, rate = decode(source, offset=offset, num_frames=num_frames)
    finite = np.isfinite(audio)
    if not finite.all():
        raise DataError(
            f"{_describe(source)}: {audio.size - np.count_nonzero(finite)} NaN/inf samples; "
            "`sslspeech check MANIFEST` lists every such file: fix them or drop them from the "
            "manifest"
        )
    if audio.shape[1] != 1:
        if not downmix:
            raise DataError(
                f"{_describe(source)}: {audio.shape[1]} channels, expected mono "
                "(pass downmix=True to average the channels)"
            )
        audio = audio.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(audio[:, 0], dtype=np.float32)
    if rate != sample_rate:
        if not resample:
            raise DataError(
                f"{_describe(source)}: sample rate {rate} Hz, expected {sample_rate} Hz; "
                f"convert the corpus to {sample_rate} Hz once (e.g. `sox IN -r {sample_rate} "
                "OUT`) and rebuild the manifest (Python: load_audio(..., resample=True))"
            )
        wav = resample_audio(torch.from_numpy(wav), rate, sample_rate).numpy()
    if normalize:
        wav = standardize(wav)
    return wav


def standardize(wav: ArrayOrTensor, eps: float = 1e-5) -> ArrayOrTensor:
    """Per-utterance zero mean, unit variance over the last axis (`F.layer_norm`, no affine)."""
    tensor = torch.as_tensor(wav)
    if tensor.shape[-1] == 0:
        return wav
    out = F.layer_norm(tensor.float(), tensor.shape[-1:], eps=eps)
    return out.numpy() if isinstance(wav, np.ndarray) else out


def _sinc_kernel(
    orig: int, new: int, zero_crossings: int, rolloff: float, beta: float
) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc filters: one row per output phase, taps over input samples."""
    cutoff = min(1.0, new / orig) * rolloff  # fraction of the input Nyquist kept
    half = int(np.ceil(zero_crossings / cutoff))
    taps = torch.arange(-half, half + orig, dtype=torch.float64)  # input offsets per output block
    phases = torch.arange(new, dtype=torch.float64)[:, None] * orig / new
    t = phases - taps[None, :]  # distance (input samples) from each output instant to each tap
    window = torch.special.i0(beta * torch.sqrt(1 - (t / half).clamp(-1, 1) ** 2)) / float(
        np.i0(beta)
    )
    window = torch.where(t.abs() <= half, window, torch.zeros_like(window))
    kernel = cutoff * torch.sinc(cutoff * t) * window
    return kernel.float()[:, None, :], half


def resample_audio(
    wav: torch.Tensor,
    orig_rate: int,
    new_rate: int,
    *,
    zero_crossings: int = 24,
    rolloff: float = 0.945,
    beta: float = 14.0,
) -> torch.Tensor:
    """Band-limited resampling of `(..., time)` by a Kaiser-windowed sinc polyphase filter.

    Exact rational ratios (e.g. 44.1 kHz -> 16 kHz = 160/441); `rolloff` sets the pass band as a
    fraction of the lower Nyquist; the stop band is attenuated by about 100+ dB (beta 14).
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise DataError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wav
    g = int(np.gcd(orig_rate, new_rate))
    orig, new = orig_rate // g, new_rate // g
    kernel, half = _sinc_kernel(orig, new, zero_crossings, rolloff, beta)
    shape = wav.shape
    x = wav.reshape(-1, 1, shape[-1]).float()
    length = shape[-1]
    x = F.pad(x, (half, half + orig))
    out = F.conv1d(x, kernel.to(x.device), stride=orig)  # (batch, new phases, blocks)
    out = out.transpose(1, 2).reshape(x.shape[0], -1)
    target = -(-length * new // orig)
    return out[:, :target].reshape(*shape[:-1], target).to(wav.dtype)


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit PCM WAV (a convenience for tests and tools)."""
    import soundfile as sf

    sf.write(str(path), wav, sample_rate, subtype="PCM_16")
