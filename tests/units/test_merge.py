"""units merge: joins on fileid (any order), halves 100 Hz MFCC units or keeps them whole as
100 Hz labels, checks lengths with the documented +-1 tolerance, and names the utterance when
units are missing or the wrong length."""

from __future__ import annotations

import json

import pytest

from sslspeech.data.manifest import ManifestEntry, read_manifest, write_manifest
from sslspeech.errors import ConfigError, DataError
from sslspeech.units import merge
from sslspeech.units.merge import expected_frames

SAMPLES = {"a": 16000, "b": 8000, "c": 400, "d": 33333}


@pytest.fixture
def manifest(tmp_path):
    entries = [ManifestEntry(k, f"/audio/{k}.wav", n) for k, n in SAMPLES.items()]
    write_manifest(entries, tmp_path / "m.csv")
    return tmp_path / "m.csv"


def write_units(path, units):
    path.write_text("".join(json.dumps({"fileid": k, "units": v}) + "\n" for k, v in units))
    return path


def mfcc_frames(n):
    return 1 + (n - 400) // 160


def test_expected_frames():
    """The base conv stack's count: 1 + (n - 400) // 320, 0 below 400 samples."""
    assert [expected_frames(n) for n in (0, 399, 400, 719, 720, 16000)] == [0, 0, 1, 1, 2, 49]


def test_merge_joins_on_fileid(manifest, tmp_path):
    """Units listed in another order land on the right manifest rows; extras are ignored."""
    units = [(k, list(range(expected_frames(n)))) for k, n in SAMPLES.items()]
    path = write_units(tmp_path / "u.jsonl", [*units[::-1], ("zzz", [1, 2])])
    assert merge(manifest, path, tmp_path / "out.csv") == 4
    out = read_manifest(tmp_path / "out.csv")
    assert [e.fileid for e in out] == list(SAMPLES)
    for entry, (_, expected) in zip(out, units, strict=True):
        assert list(entry.units) == expected
        assert entry.path == f"/audio/{entry.fileid}.wav"


def test_from_mfcc_takes_every_second_unit(manifest, tmp_path):
    """100 Hz units: units[::2] (the recipe's rule) fits the 50 Hz count within +-1."""
    units = [(k, [i % 7 for i in range(mfcc_frames(n))]) for k, n in SAMPLES.items()]
    path = write_units(tmp_path / "u.jsonl", units)
    merge(manifest, path, tmp_path / "out.jsonl", from_mfcc=True)
    out = {e.fileid: list(e.units) for e in read_manifest(tmp_path / "out.jsonl")}
    for key, labels in units:
        assert out[key] == labels[::2]
    with pytest.raises(DataError, match="pass --from-mfcc"):
        merge(manifest, path, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_100_hz_labels_keep_every_mfcc_unit(manifest, tmp_path):
    """label_rate=100: MFCC units are written whole (1 + (n - 400) // 160 each); 50 Hz units
    cannot make 100 Hz labels, and a rate other than 50/100 is refused."""
    units = [(k, [i % 5 for i in range(mfcc_frames(n))]) for k, n in SAMPLES.items()]
    path = write_units(tmp_path / "u.jsonl", units)
    merge(manifest, path, tmp_path / "out.csv", from_mfcc=True, label_rate=100.0)
    out = {e.fileid: list(e.units) for e in read_manifest(tmp_path / "out.csv")}
    assert out == dict(units)
    halves = [(k, v[::2]) for k, v in units]
    with pytest.raises(DataError, match=r"expected 98 \(100 Hz.*look like 50 Hz units"):
        merge(
            manifest,
            write_units(tmp_path / "h.jsonl", halves),
            tmp_path / "bad.csv",
            from_mfcc=True,
            label_rate=100.0,
        )
    with pytest.raises(ConfigError, match="--from-mfcc"):
        merge(manifest, path, tmp_path / "bad.csv", label_rate=100.0)
    with pytest.raises(ConfigError, match="50 or 100"):
        merge(manifest, path, tmp_path / "bad.csv", from_mfcc=True, label_rate=25.0)


def test_tolerance(manifest, tmp_path):
    """One frame more or less is accepted; two is an error naming the utterance and counts."""
    off_by_one = [
        (k, [0] * (expected_frames(n) + (1 if k == "b" else 0))) for k, n in SAMPLES.items()
    ]
    merge(manifest, write_units(tmp_path / "u1.jsonl", off_by_one), tmp_path / "ok.csv")
    off_by_two = [
        (k, [0] * (expected_frames(n) + (2 if k == "d" else 0))) for k, n in SAMPLES.items()
    ]
    with pytest.raises(DataError, match=r"'d': 105 units for 33333 samples, expected 103"):
        merge(manifest, write_units(tmp_path / "u2.jsonl", off_by_two), tmp_path / "bad.csv")


def test_missing_utterance(manifest, tmp_path):
    """Units missing for a manifest entry: DataError naming the fileid; no output written."""
    units = [(k, [0] * expected_frames(n)) for k, n in SAMPLES.items() if k != "c"]
    with pytest.raises(DataError, match="no units for fileid 'c'"):
        merge(manifest, write_units(tmp_path / "u.jsonl", units), tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_km_lines_pair_by_order(manifest, tmp_path):
    """A fairseq .km file pairs line by line; a line count mismatch is an error."""
    lines = [" ".join(["3"] * expected_frames(n)) for n in SAMPLES.values()]
    (tmp_path / "u.km").write_text("\n".join(lines) + "\n")
    merge(manifest, tmp_path / "u.km", tmp_path / "out.csv")
    assert all(set(e.units) <= {3} for e in read_manifest(tmp_path / "out.csv"))
    (tmp_path / "short.km").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(DataError, match="3 lines"):
        merge(manifest, tmp_path / "short.km", tmp_path / "out2.csv")


def test_relative_paths_stay_valid(tmp_path, monkeypatch):
    """A manifest given by a relative path, merged into another folder: paths still resolve."""
    (tmp_path / "corpus").mkdir()
    entries = [ManifestEntry("a", "wav/a.wav", 16000)]
    write_manifest(entries, tmp_path / "corpus" / "m.csv")
    write_units(tmp_path / "u.jsonl", [("a", [0] * 49)])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels").mkdir()
    merge("corpus/m.csv", "u.jsonl", "labels/out.csv")
    (entry,) = read_manifest(tmp_path / "labels" / "out.csv")
    assert entry.path == str(tmp_path / "corpus" / "wav" / "a.wav")


def test_cli(manifest, tmp_path):
    """`sslspeech units merge ... --from-mfcc [--label-rate 100]` writes the manifest with
    units (halved, or whole at 100 Hz)."""
    from sslspeech.cli import main

    units = [(k, [1] * mfcc_frames(n)) for k, n in SAMPLES.items()]
    path = write_units(tmp_path / "u.jsonl", units)
    out = tmp_path / "labels.tsv"
    assert main(["units", "merge", str(manifest), str(path), str(out), "--from-mfcc"]) == 0
    assert read_manifest(out).has_units
    args = ["units", "merge", str(manifest), str(path), str(tmp_path / "l100.csv"), "--from-mfcc"]
    assert main([*args, "--label-rate", "100"]) == 0
    assert [len(e.units) for e in read_manifest(tmp_path / "l100.csv")] == [
        mfcc_frames(n) for n in SAMPLES.values()
    ]
