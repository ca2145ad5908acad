"""Quality of discrete units against frame-level phone alignments.

Phone purity, cluster purity and PNMI follow the HuBERT paper (fairseq
`measure_teacher_quality.py`): with the joint distribution P(phone, unit) over aligned frames,
phone purity = sum_u max_p P(p, u), cluster purity = sum_p max_u P(p, u) and
PNMI = I(phone; unit) / H(phone). Unit perplexity is 2 ** H(unit) over the same frames.
Bitrate is the ZeroSpeech 2019 one: symbols per second times the entropy (bits) of the symbol
distribution, on the unit sequences as given and with consecutive repeats merged.

Alignment rule: the two rates must be integer multiples of each other; the lower-rate sequence
is repeated `ratio` times per frame (50 Hz units -> 2 frames at 100 Hz, like fairseq's
`--upsample`), then both are cut to the shorter length. A length difference above `tolerance`
frames of the lower rate is an error (a wrong rate, or units of another utterance).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslspeech.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointCounts:
    """Frame counts of (phone, unit) pairs: counts[i, j] for phones[i] and units[j]."""

    counts: np.ndarray
    phones: list[str]
    units: list[int]
    num_utterances: int
    missing: int  # utterances with units but no alignment (left out)


def _ratio(unit_rate: float, phone_rate: float) -> tuple[int, bool]:
    """(ratio, units_are_lower): how many higher-rate frames one lower-rate frame covers."""
    if unit_rate <= 0 or phone_rate <= 0:
        raise ConfigError(f"rates must be positive, got unit {unit_rate} Hz, phone {phone_rate} Hz")
    low, high = sorted((unit_rate, phone_rate))
    ratio = high / low
    if abs(ratio - round(ratio)) > 1e-9:
        raise ConfigError(
            f"unit rate {unit_rate} Hz and phone rate {phone_rate} Hz must be integer multiples "
            "of each other (e.g. 50 and 100)"
        )
    return round(ratio), unit_rate <= phone_rate


def align_frames(
    units: Sequence[int],
    phones: Sequence[str],
    *,
    unit_rate: float = 50,
    phone_rate: float = 100,
    tolerance: int = 3,
    name: str = "",
) -> tuple[np.ndarray, list[str]]:
    """Units and phones on one frame grid (the higher rate), cut to the shorter length."""
    ratio, units_lower = _ratio(unit_rate, phone_rate)
    unit_frames = np.asarray(units, dtype=np.int64)
    phone_frames = list(phones)
    if units_lower:
        unit_frames = np.repeat(unit_frames, ratio)
    else:
        phone_frames = [phone for phone in phone_frames for _ in range(ratio)]
    if abs(len(unit_frames) - len(phone_frames)) > tolerance * ratio:
        raise DataError(
            f"utterance {name!r}: {len(units)} units at {unit_rate} Hz vs {len(phones)} phone "
            f"frames at {phone_rate} Hz differ by more than {tolerance} frames at the lower rate "
            "(wrong rate, or units of another utterance?)"
        )
    length = min(len(unit_frames), len(phone_frames))
    return unit_frames[:length], phone_frames[:length]


def joint_counts(
    units: Mapping[str, Sequence[int]],
    alignments: Mapping[str, Sequence[str]],
    *,
    unit_rate: float = 50,
    phone_rate: float = 100,
    tolerance: int = 3,
) -> JointCounts:
    """Count aligned (phone, unit) frames over the utterances that have both."""
    common = [name for name in units if name in alignments]
    if not common:
        raise DataError(
            f"no utterance has both units ({len(units)}) and an alignment ({len(alignments)}): "
            "do the unit file ids match the alignment names?"
        )
    missing = len(units) - len(common)
    if missing:
        log.warning("%d of %d utterances have no alignment; left out", missing, len(units))
    all_units, all_phones = [], []
    for name in common:
        u, p = align_frames(
            units[name],
            alignments[name],
            unit_rate=unit_rate,
            phone_rate=phone_rate,
            tolerance=tolerance,
            name=name,
        )
        all_units.append(u)
        all_phones.extend(p)
    unit_array = np.concatenate(all_units) if all_units else np.zeros(0, dtype=np.int64)
    phone_names, phone_index = np.unique(np.asarray(all_phones, dtype=object), return_inverse=True)
    unit_ids, unit_index = np.unique(unit_array, return_inverse=True)
    counts = np.zeros((len(phone_names), len(unit_ids)), dtype=np.int64)
    np.add.at(counts, (phone_index, unit_index), 1)
    return JointCounts(
        counts, [str(p) for p in phone_names], unit_ids.tolist(), len(common), missing
    )


def _entropy_bits(probabilities: np.ndarray) -> float:
    p = probabilities[probabilities > 0]
    return float(-(p * np.log2(p)).sum())


def quality_from_counts(joint: JointCounts) -> dict[str, float | int]:
    """Purities, PNMI, entropies and perplexities of a joint (phone, unit) count table."""
    total = joint.counts.sum()
    if total == 0:
        raise DataError("no aligned frame to measure unit quality on")
    p_joint = joint.counts / total
    p_phone, p_unit = p_joint.sum(1), p_joint.sum(0)
    h_phone, h_unit = _entropy_bits(p_phone), _entropy_bits(p_unit)
    nonzero = p_joint > 0
    outer = np.outer(p_phone, p_unit)
    mutual = float((p_joint[nonzero] * np.log2(p_joint[nonzero] / outer[nonzero])).sum())
    return {
        "phone_purity": float(p_joint.max(0).sum()),
        "cluster_purity": float(p_joint.max(1).sum()),
        "pnmi": mutual / h_phone if h_phone > 0 else 0.0,
        "mutual_information_bits": mutual,
        "phone_entropy_bits": h_phone,
        "unit_entropy_bits": h_unit,
        "unit_perplexity": 2.0**h_unit,
        "phone_perplexity": 2.0**h_phone,
        "num_frames": int(total),
        "num_utterances": joint.num_utterances,
        "num_missing_alignments": joint.missing,
        "num_units_used": len(joint.units),
        "num_phones": len(joint.phones),
    }


def bitrate(units: Mapping[str, Sequence[int]], unit_rate: float = 50) -> dict[str, float]:
    """ZeroSpeech bitrate: symbols per second x entropy (bits) of the symbol distribution.

    `bitrate` counts every frame's unit; `bitrate_dedup` merges consecutive repeats first.
    """
    sequences = [np.asarray(seq, dtype=np.int64) for seq in units.values()]
    frames = sum(len(seq) for seq in sequences)
    if frames == 0:
        raise DataError("no unit to compute a bitrate on")
    seconds = frames / unit_rate
    runs = [seq[np.concatenate([[True], seq[1:] != seq[:-1]])] for seq in sequences if len(seq)]
    deduped = np.concatenate(runs)
    entropy = _entropy_bits(np.unique(np.concatenate(sequences), return_counts=True)[1] / frames)
    entropy_dedup = _entropy_bits(np.unique(deduped, return_counts=True)[1] / len(deduped))
    return {
        "bitrate": frames / seconds * entropy,
        "bitrate_dedup": len(deduped) / seconds * entropy_dedup,
        "units_per_second_dedup": len(deduped) / seconds,
        "seconds": seconds,
    }


def unit_quality(
    units: Mapping[str, Sequence[int]],
    alignments: Mapping[str, Sequence[str]],
    unit_rate: float = 50,
    phone_rate: float = 100,
    *,
    tolerance: int = 3,
) -> dict[str, float | int]:
    """All unit-quality figures: purities, PNMI, perplexity (aligned frames), bitrate (all units).

    units: fileid -> unit ids at `unit_rate` Hz; alignments: fileid -> phone label per frame at
    `phone_rate` Hz. Utterances without an alignment are left out of the aligned figures and
    counted in `num_missing_alignments`.
    """
    joint = joint_counts(
        units, alignments, unit_rate=unit_rate, phone_rate=phone_rate, tolerance=tolerance
    )
    return {**quality_from_counts(joint), **bitrate(units, unit_rate)}


def phone_given_unit(joint: JointCounts) -> tuple[np.ndarray, list[str], list[int]]:
    """P(phone | unit), phones by decreasing frequency, units sorted by their most likely phone.

    Returns (matrix [phone, unit], phone labels, unit ids) in display order.
    """
    phone_order = sorted(range(len(joint.phones)), key=lambda i: (-joint.counts[i].sum(), i))
    counts = joint.counts[phone_order].astype(np.float64)
    conditional = counts / np.maximum(counts.sum(0, keepdims=True), 1)
    best = conditional.argmax(0)
    unit_order = sorted(range(len(joint.units)), key=lambda j: (best[j], -conditional[best[j], j]))
    return (
        conditional[:, unit_order],
        [joint.phones[i] for i in phone_order],
        [joint.units[j] for j in unit_order],
    )


def plot_phone_unit_heatmap(
    joint: JointCounts, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write a PNG heatmap of P(phone | unit) (units sorted by their most likely phone)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    from sslspeech.utils.fileio import atomic_path

    matrix, phones, unit_ids = phone_given_unit(joint)
    width = min(4 + 0.05 * len(unit_ids), 40)
    height = min(2 + 0.22 * len(phones), 30)
    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    axes.set_yticks(range(len(phones)), phones, fontsize=7)
    axes.set_xlabel(f"{len(unit_ids)} units (sorted by most likely phone)")
    axes.set_ylabel("phone")
    if len(unit_ids) <= 60:
        axes.set_xticks(range(len(unit_ids)), [str(u) for u in unit_ids], fontsize=6, rotation=90)
    else:
        axes.set_xticks([])
    axes.set_title(title or "P(phone | unit)")
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.01)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _read_jsonl(path: str | os.PathLike[str], key: str, value: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Path(path).open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                name, data = record[key], record[value]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(
                    f"{path}:{number}: expected a JSON object with {key!r} and {value!r} ({error})"
                ) from None
            if name in out:
                raise DataError(f"{path}:{number}: {key} {name!r} appears twice")
            out[name] = data
    return out


def read_units(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Units JSONL `{"fileid": ..., "units": [...]}` -> fileid -> units."""
    return _read_jsonl(path, "fileid", "units")


def read_alignments(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Phone alignments JSONL `{"name": ..., "phones": [...]}` (10 ms frames) -> name -> phones."""
    return _read_jsonl(path, "name", "phones")
