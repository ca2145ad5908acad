"""Unit quality (purities, PNMI, perplexity, bitrate) on hand-made cases with known values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from sslspeech.errors import ConfigError, DataError
from sslspeech.evaluation.quality import (
    align_frames,
    bitrate,
    joint_counts,
    phone_given_unit,
    plot_phone_unit_heatmap,
    quality_from_counts,
    read_alignments,
    read_units,
    unit_quality,
)


def entropy_bits(labels: list) -> float:
    _, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_perfect_mapping() -> None:
    """A unit per phone (units at 50 Hz, phones at 100 Hz): purities 1, PNMI 1, perplexity =
    2 ** H(phone)."""
    rng = np.random.default_rng(0)
    units = {f"u{k}": rng.integers(0, 4, 30).tolist() for k in range(3)}
    names = ["a", "b", "c", "d"]
    alignments = {key: [names[u] for u in seq for _ in range(2)] for key, seq in units.items()}
    quality = unit_quality(units, alignments, unit_rate=50, phone_rate=100)
    assert quality["phone_purity"] == pytest.approx(1.0)
    assert quality["cluster_purity"] == pytest.approx(1.0)
    assert quality["pnmi"] == pytest.approx(1.0)
    flat = [p for seq in alignments.values() for p in seq]
    assert quality["unit_perplexity"] == pytest.approx(2 ** entropy_bits(flat))
    assert quality["num_frames"] == 180 and quality["num_utterances"] == 3


def test_independent_units_and_phones() -> None:
    """Every (phone, unit) combination equally often (2 phones x 3 units, P = 1/6 each): PNMI 0,
    phone purity = 3 x 1/6 = 1/2, cluster purity = 2 x 1/6 = 1/3, unit perplexity 3."""
    units, phones = [], []
    for phone in ("a", "b"):
        for unit in (0, 1, 2):
            units += [unit] * 4
            phones += [phone] * 4
    quality = unit_quality({"x": units}, {"x": phones}, unit_rate=100, phone_rate=100)
    assert quality["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert quality["phone_purity"] == pytest.approx(0.5)
    assert quality["cluster_purity"] == pytest.approx(1 / 3)
    assert quality["unit_perplexity"] == pytest.approx(3.0)


def test_pnmi_matches_sklearn() -> None:
    """A noisy mapping: PNMI = I(p; u) / H(p), checked against scikit-learn's mutual
    information (nats) and a direct entropy, and purities against a plain count."""
    rng = np.random.default_rng(1)
    phones = rng.integers(0, 6, 2000)
    units = np.where(
        rng.random(2000) < 0.7, phones * 2 + rng.integers(0, 2, 2000), rng.integers(0, 12, 2000)
    )
    labels = [f"p{p}" for p in phones]
    quality = unit_quality({"x": units.tolist()}, {"x": labels}, unit_rate=100, phone_rate=100)
    mutual_bits = mutual_info_score(labels, units) / math.log(2)
    assert quality["mutual_information_bits"] == pytest.approx(mutual_bits, rel=1e-9)
    assert quality["pnmi"] == pytest.approx(mutual_bits / entropy_bits(labels), rel=1e-9)
    purity = sum(np.bincount(phones[units == u]).max() for u in np.unique(units)) / len(units)
    assert quality["phone_purity"] == pytest.approx(purity)
    cluster = sum(np.bincount(units[phones == p]).max() for p in np.unique(phones)) / len(units)
    assert quality["cluster_purity"] == pytest.approx(cluster)


def test_alignment_rule_and_tolerance() -> None:
    """50 Hz units are repeated twice onto the 100 Hz phone grid, then cut to the shorter one;
    phones at a lower rate are repeated instead; a large length mismatch is an error."""
    units, phones = align_frames([7, 8, 9], ["a", "a", "b", "b", "c"], unit_rate=50, phone_rate=100)
    assert units.tolist() == [7, 7, 8, 8, 9] and phones == ["a", "a", "b", "b", "c"]
    units, phones = align_frames([1, 2, 3, 4], ["a", "b"], unit_rate=100, phone_rate=50)
    assert units.tolist() == [1, 2, 3, 4] and phones == ["a", "a", "b", "b"]
    with pytest.raises(DataError, match="utt"):
        align_frames([1] * 10, ["a"] * 40, unit_rate=50, phone_rate=100, name="utt")
    with pytest.raises(ConfigError, match="integer multiples"):
        align_frames([1], ["a"], unit_rate=30, phone_rate=100)


def test_bitrate() -> None:
    """ZeroSpeech bitrate = symbols/s x entropy (bits): [0,0,1,1] at 50 Hz is 0.08 s with
    H = 1 bit -> 50 bit/s; deduplicated [0,1] -> 25 symbols/s x 1 bit."""
    rate = bitrate({"x": [0, 0, 1, 1]}, unit_rate=50)
    assert rate["bitrate"] == pytest.approx(50.0)
    assert rate["bitrate_dedup"] == pytest.approx(25.0)
    assert rate["units_per_second_dedup"] == pytest.approx(25.0)


def test_missing_alignments_are_counted() -> None:
    """Utterances without alignment are left out and counted; none in common is an error."""
    quality = unit_quality({"x": [1, 1], "y": [2]}, {"x": ["a", "a"]}, 100, 100)
    assert quality["num_missing_alignments"] == 1 and quality["num_frames"] == 2
    with pytest.raises(DataError, match="no utterance"):
        unit_quality({"x": [1]}, {"z": ["a"]}, 100, 100)


def test_heatmap_and_order(tmp_path: Path) -> None:
    """P(phone | unit) columns sum to 1; units are sorted by their most likely phone; the PNG
    is written."""
    units = {"x": [5, 5, 3, 3, 9, 9, 3]}
    phones = {"x": ["b", "b", "a", "a", "a", "b", "a"]}
    joint = joint_counts(units, phones, unit_rate=100, phone_rate=100)
    matrix, phone_labels, unit_ids = phone_given_unit(joint)
    assert np.allclose(matrix.sum(0), 1)
    assert phone_labels == ["a", "b"]  # a is the most frequent phone
    assert unit_ids == [3, 9, 5]  # 3 -> a (1.0), 9 -> a (0.5 tie broken by phone order), 5 -> b
    path = plot_phone_unit_heatmap(joint, tmp_path / "heat.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert quality_from_counts(joint)["num_units_used"] == 3


def test_jsonl_readers(tmp_path: Path) -> None:
    """Units JSONL {"fileid","units"} and alignments JSONL {"name","phones"}; duplicates fail."""
    (tmp_path / "u.jsonl").write_text('{"fileid": "a", "units": [1, 2]}\n')
    (tmp_path / "p.jsonl").write_text('{"name": "a", "phones": ["x", "y"]}\n')
    assert read_units(tmp_path / "u.jsonl") == {"a": [1, 2]}
    assert read_alignments(tmp_path / "p.jsonl") == {"a": ["x", "y"]}
    (tmp_path / "u.jsonl").write_text('{"fileid": "a", "units": [1]}\n' * 2)
    with pytest.raises(DataError, match="twice"):
        read_units(tmp_path / "u.jsonl")
