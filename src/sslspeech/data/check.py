"""Decode every entry of a manifest and report the bad ones (never stopping at the first).

Problems found, each with a short code and a human reason: ``unreadable`` (missing, corrupt or
truncated file, bad tar range), ``empty`` (no samples), ``sample_rate``, ``channels``,
``non_finite`` (NaN or inf samples) and ``num_samples`` (the decoded count differs from the
manifest). Files are decoded in blocks, so long files need little memory.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslspeech.data.audio import SAMPLE_RATE, RangeFile, not_audio, read_range
from sslspeech.data.manifest import ManifestEntry, iter_manifest, no_entries_error
from sslspeech.data.parallel import ordered_map
from sslspeech.errors import DataError
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.progress import progress

_BLOCK = 1 << 20  # frames decoded at a time


@dataclass
class Problem:
    """One bad manifest entry: where it is and every reason found."""

    fileid: str
    path: str
    codes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    archive: str | None = None

    def add(self, code: str, reason: str) -> None:
        self.codes.append(code)
        self.reasons.append(reason)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"fileid": self.fileid, "path": self.path}
        if self.archive is not None:
            record["archive"] = self.archive
        record.update(reason="; ".join(self.reasons), problems=self.codes)
        return record


def _open(entry: ManifestEntry) -> Any:
    if entry.archive is None:
        return entry.path
    offset, size = entry.byte_offset or 0, entry.byte_size or 0
    if size <= 64 << 20:  # small members: one read, then decode from memory
        return io.BytesIO(read_range(entry.archive, offset, size))
    return io.BufferedReader(RangeFile(entry.archive, offset, size), 1 << 20)


def _decode_stats(handle: Any) -> tuple[int, int]:
    """(decoded frames, non-finite samples) of an open SoundFile, block by block."""
    frames = bad = 0
    while True:
        block = handle.read(_BLOCK, dtype="float32", always_2d=True)
        if not len(block):
            return frames, bad
        frames += len(block)
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))


def check_entry(entry: ManifestEntry, sample_rate: int = SAMPLE_RATE) -> Problem | None:
    """Decode one entry fully; None when it is fine, else every problem found."""
    import soundfile as sf

    problem = Problem(entry.fileid, entry.path, archive=entry.archive)
    try:
        with sf.SoundFile(_open(entry)) as handle:
            rate, channels = handle.samplerate, handle.channels
            frames, non_finite = _decode_stats(handle)
    except DataError as error:
        problem.add("unreadable", str(error))
        return problem
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as error:
        problem.add("unreadable", str(not_audio(entry, error, "cannot decode")))
        return problem
    if frames == 0:
        problem.add("empty", "no samples")
    if rate != sample_rate:
        problem.add("sample_rate", f"sample rate {rate} Hz, expected {sample_rate} Hz")
    if channels != 1:
        problem.add("channels", f"{channels} channels, expected mono")
    if non_finite:
        problem.add("non_finite", f"{non_finite} NaN/inf samples")
    if frames != entry.num_samples:
        problem.add(
            "num_samples", f"decoded {frames} samples, the manifest says {entry.num_samples}"
        )
    return problem if problem.codes else None


def _check_chunk(chunk: list[tuple[ManifestEntry, int]]) -> list[Problem | None]:
    return [check_entry(entry, rate) for entry, rate in chunk]


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def check_manifest(
    manifest: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    quiet: bool = False,
) -> Iterator[Problem]:
    """The problems of a manifest's entries, in manifest order (entries streamed, not held)."""
    path = Path(manifest)
    total = _count_lines(path)
    jobs: Iterable[tuple[ManifestEntry, int]] = (
        (entry, sample_rate) for entry in iter_manifest(path)
    )
    results = ordered_map(_check_chunk, jobs, workers=workers, chunk_size=16)
    checked = 0
    for problem in progress(results, total=total, desc="check", unit="file", quiet=quiet):
        checked += 1
        if problem is not None:
            yield problem
    if not checked:
        raise no_entries_error(path)


def write_report(problems: Iterable[Problem], report: str | os.PathLike[str] | None) -> int:
    """Write problems as JSONL (atomically to `report`, or to stdout); returns their number."""
    count = 0
    if report is None:
        for problem in problems:
            print(json.dumps(problem.to_dict(), ensure_ascii=False), file=sys.stdout)
            count += 1
        return count
    with atomic_open(report, "w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count
