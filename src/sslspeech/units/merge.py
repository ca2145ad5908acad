"""Merge units into a manifest: the training labels of the next HuBERT iteration.

Joins on `fileid` (units JSONL `{"fileid", "units"}`), or by line order for fairseq `.km` files.
Both files are streamed: when the units come in manifest order (as `transcribe` writes them)
nothing is buffered; units that come early wait in a dict until their manifest line.

Label rate: by default the targets are at the 50 Hz frame rate of the base conv stack (320
samples per frame), so an utterance of n samples should get `1 + (n - 400) // 320` units.
`from_mfcc` says the units are 100 Hz MFCC units: at `label_rate=50` every second one is kept,
as our recipe does (`units[::2]`, which gives ceil(T100 / 2)); at `label_rate=100` all are kept
(`1 + (n - 400) // 160` per utterance), as fairseq's first iteration does, and the model
(`label_rate = 100`) picks the label of frame t at index 2t (fairseq `forward_targets`).
Counts may differ from the expected one by `tolerance` frames (default 1: the rounding of the
two frame rules; the recipe's data loader crops labels and audio to match).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sslspeech.errors import ConfigError, DataError

log = logging.getLogger(__name__)

WINDOW = 400
SAMPLES_PER_FRAME = 320
LABEL_RATES = (50.0, 100.0)


def expected_frames(num_samples: int, samples_per_frame: int = SAMPLES_PER_FRAME) -> int:
    """Frames of the base conv stack (receptive field 400, stride 320 at 16 kHz) for n samples."""
    return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // samples_per_frame


def iter_units(path: str | os.PathLike[str]) -> Iterator[tuple[str | None, list[int]]]:
    """(fileid, units) per line of a units JSONL; fileid None for `.km` lines."""
    path = Path(path)
    km = path.suffix == ".km"
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if km:
                try:
                    yield None, [int(token) for token in line.split()]
                except ValueError:
                    raise DataError(f"{where}: a .km line holds integers only") from None
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise DataError(f"{where}: not valid JSON ({error})") from None
            if not isinstance(record, dict) or "fileid" not in record or "units" not in record:
                raise DataError(f'{where}: expected {{"fileid": ..., "units": [...]}}')
            units = record["units"]
            if not isinstance(units, list) or not all(
                isinstance(u, int) and not isinstance(u, bool) for u in units
            ):
                raise DataError(f"{where}: units must be a list of integers")
            yield str(record["fileid"]), units


class _UnitsLookup:
    """Units by fileid from a stream, buffering only what arrives before it is asked for."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.stream = iter_units(path)
        self.pending: dict[str, list[int]] = {}
        self.km = Path(path).suffix == ".km"

    def get(self, fileid: str) -> list[int] | None:
        if self.km:
            item = next(self.stream, None)
            return None if item is None else item[1]
        if fileid in self.pending:
            return self.pending.pop(fileid)
        for key, units in self.stream:
            assert key is not None
            if key == fileid:
                return units
            if key in self.pending:
                raise DataError(f"{self.path}: fileid {key!r} appears twice")
            self.pending[key] = units
        return None


def _check_length(
    fileid: str, units: list[int], num_samples: int, label_rate: float, tolerance: int, hint: str
) -> None:
    expected = expected_frames(num_samples, round(16000 / label_rate))
    if abs(len(units) - expected) <= tolerance:
        return
    ratio = len(units) / expected if expected else float("inf")
    advice = hint
    if 1.8 < ratio < 2.2:
        advice = "these look like 100 Hz units: pass --from-mfcc (from_mfcc=True)"
    elif 0.45 < ratio < 0.55:
        advice = "these look like 50 Hz units; 100 Hz labels need 100 Hz (MFCC) units"
    raise DataError(
        f"{fileid!r}: {len(units)} units for {num_samples} samples, expected {expected} "
        f"({label_rate:g} Hz, +-{tolerance}); {advice}"
    )


def merge(
    manifest: str | os.PathLike[str],
    units: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    from_mfcc: bool = False,
    label_rate: float = 50.0,
    tolerance: int = 1,
) -> int:
    """Write `out`: `manifest` with a units column (format from `out`'s extension); returns count.

    Audio paths are written absolute, so `out` may live in any folder. `label_rate` (50 or 100
    Hz) is the rate of the written labels; 100 needs `from_mfcc` (see the module docstring).

    Raises DataError naming the utterance when units are missing or their count does not
    match the audio length (see the module docstring for the rule).
    """
    from sslspeech.data.manifest import iter_manifest, write_manifest

    if label_rate not in LABEL_RATES:
        raise ConfigError(f"label_rate must be 50 or 100 (Hz), got {label_rate}")
    if label_rate == 100.0 and not from_mfcc:
        raise ConfigError(
            "100 Hz labels come from 100 Hz (MFCC) units: pass --from-mfcc (from_mfcc=True); "
            "50 Hz model units are merged at --label-rate 50"
        )
    step = 2 if from_mfcc and label_rate == 50.0 else 1
    lookup = _UnitsLookup(units)
    if lookup.km:
        lines = sum(1 for _ in iter_units(units))
        rows = sum(1 for _ in iter_manifest(manifest))
        if lines != rows:
            raise DataError(
                f"{units}: {lines} lines but {manifest} has {rows} entries; a .km file pairs "
                "with its manifest line by line (use the JSONL units to join on fileid)"
            )
    hint = "were the units made from features of this manifest?"

    def entries() -> Iterator:
        for index, entry in enumerate(iter_manifest(manifest)):
            found = lookup.get(entry.fileid)
            if found is None:
                where = f"line {index + 1}" if lookup.km else f"fileid {entry.fileid!r}"
                raise DataError(
                    f"{units}: no units for {where} of {manifest} (entry {index + 1}); "
                    "transcribe the features of this manifest"
                )
            labels = found[::step]
            _check_length(entry.fileid, labels, entry.num_samples, label_rate, tolerance, hint)
            yield dataclasses.replace(
                entry,
                path=entry.path if entry.archive else str(Path(entry.path).absolute()),
                archive=entry.archive and str(Path(entry.archive).absolute()),
                units=tuple(labels),
            )

    count = write_manifest(entries(), out)
    extra = len(lookup.pending) + sum(1 for _ in lookup.stream)
    if extra:
        log.info("%s: %d utterances not in %s were ignored", units, extra, manifest)
    return count
