"""`manifest` and `check`: real files on disk and in a real tar, good and bad ones."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sslspeech.cli import main
from sslspeech.data.audio import load_audio
from sslspeech.data.manifest import ManifestEntry, read_manifest, write_manifest
from sslspeech.data.scan import create_manifest, scan_dataset
from sslspeech.errors import DataError

from .conftest import RATE, make_tar, tone


def test_directory_manifest_is_sorted_with_header_counts(corpus, tmp_path: Path) -> None:
    """Nested WAV/FLAC/OGG/MP3: fileid = relative path without extension, counts = real lengths."""
    root, sizes = corpus
    out = tmp_path / "m.csv"
    assert main(["manifest", str(root), str(out), "--ext", ".wav,.flac,.ogg,.mp3", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert list(manifest.fileids) == sorted(manifest.fileids)
    assert set(manifest.fileids) == {*sizes, "spk2/f", "spk2/g", "spk2/h"}
    for entry in manifest:
        assert entry.num_samples == len(load_audio(entry))
        assert Path(entry.path).is_file()


def test_same_output_for_any_worker_count(tmp_path: Path) -> None:
    """The manifest is byte-identical with 1 and 2 worker processes (and tricky names sort)."""
    root = tmp_path / "d"
    names = ["a-b", "a/x", "a0", "a/b/c", "B", "a.b", "z/y/x/w"]
    for number, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / f"{name}.wav", tone(160 * (number + 1), number), RATE, subtype="PCM_16")
    one, two = tmp_path / "1.csv", tmp_path / "2.csv"
    create_manifest(root, one, workers=1, quiet=True)
    create_manifest(root, two, workers=2, quiet=True)
    assert one.read_bytes() == two.read_bytes()
    assert list(read_manifest(one).fileids) == sorted(names)


def test_tar_manifest_reads_members_by_byte_range(corpus, tmp_path: Path) -> None:
    """A real uncompressed tar: members listed with offsets; decoding equals the loose files."""
    root, _ = corpus
    tar_path = tmp_path / "c.tar"
    make_tar(root, tar_path)
    out = tmp_path / "t.jsonl"
    assert main(["manifest", str(tar_path), str(out), "--ext", "wav,flac", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert all(e.archive == str(tar_path.absolute()) for e in manifest)
    loose = {e.fileid: e for e in scan_dataset(root, ".wav,.flac")}
    assert list(manifest.fileids) == sorted(loose)
    for entry in manifest:
        assert entry.num_samples == loose[entry.fileid].num_samples
        np.testing.assert_array_equal(load_audio(entry), load_audio(loose[entry.fileid]))


def test_compressed_tar_is_refused_with_a_fix(corpus, tmp_path: Path) -> None:
    """.tar.gz (detected by magic bytes, whatever the name) -> DataError saying to re-pack."""
    root, _ = corpus
    make_tar(root, tmp_path / "c.tar")
    with (tmp_path / "c.tar").open("rb") as raw, gzip.open(tmp_path / "c.tar.gz", "wb") as gz:
        shutil.copyfileobj(raw, gz)
    shutil.copy(tmp_path / "c.tar.gz", tmp_path / "disguised.tar")
    for name in ("c.tar.gz", "disguised.tar"):
        with pytest.raises(DataError, match=r"gzip-compressed.*uncompressed"):
            create_manifest(tmp_path / name, tmp_path / "m.csv")


def test_unreadable_headers_are_skipped_and_counted(bad_corpus, tmp_path, caplog) -> None:
    """`manifest` keeps going past a corrupt file, warns with its path and counts it."""
    with caplog.at_level(logging.WARNING):
        report = create_manifest(bad_corpus, tmp_path / "m.csv", ext="wav,flac", quiet=True)
    assert report.unreadable == 1 and report.written == 6
    assert "corrupt.wav" in caplog.text
    assert "corrupt" not in read_manifest(tmp_path / "m.csv")


def test_duplicate_fileids_from_two_extensions(tmp_path: Path) -> None:
    """a.wav and a.flac both map to fileid 'a': an error naming it."""
    for suffix in ("wav", "flac"):
        sf.write(tmp_path / f"a.{suffix}", tone(160), RATE, subtype="PCM_16")
    with pytest.raises(DataError, match="fileid 'a'"):
        create_manifest(tmp_path, tmp_path / "m.csv", ext="wav,flac")


def _report(path: Path) -> dict[str, dict]:
    return {r["fileid"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("workers", [1, 2])
def test_check_names_every_bad_file_and_good_ones_load(bad_corpus, tmp_path, workers) -> None:
    """Corrupt, empty, stereo, 8 kHz, NaN and a wrong count are each reported with a reason;
    the report lists only them, the exit status is 1, and the good files still load."""
    manifest = tmp_path / "m.csv"
    create_manifest(bad_corpus, manifest, ext="wav,flac", quiet=True)
    entries = list(read_manifest(manifest))
    # the corrupt file (skipped by `manifest`) listed by hand, and a stale count for good1
    entries.append(ManifestEntry("corrupt", str(bad_corpus / "corrupt.wav"), 3200))
    entries = [e if e.fileid != "good1" else ManifestEntry("good1", e.path, 999) for e in entries]
    write_manifest(sorted(entries, key=lambda e: e.fileid), manifest)
    report = tmp_path / "report.jsonl"
    args = ["check", str(manifest), "--report", str(report), "--workers", str(workers)]
    assert main([*args, "--quiet"]) == 1
    found = _report(report)
    assert {k: v["problems"] for k, v in found.items()} == {
        "corrupt": ["unreadable"],
        "empty": ["empty"],
        "stereo": ["channels"],
        "sub/rate8k": ["sample_rate"],
        "nan": ["non_finite"],
        "good1": ["num_samples"],
    }
    assert "8000 Hz" in found["sub/rate8k"]["reason"] and "2 channels" in found["stereo"]["reason"]
    assert "2 NaN/inf" in found["nan"]["reason"] and "999" in found["good1"]["reason"]
    assert found["corrupt"]["path"] == str(bad_corpus / "corrupt.wav")
    assert load_audio(bad_corpus / "sub/good2.flac").shape == (4000,)


def test_check_tar_members_through_byte_ranges(bad_corpus, tmp_path: Path) -> None:
    """The same problems are found inside a tar; a clean tar manifest exits 0."""
    tar_path = tmp_path / "bad.tar"
    make_tar(bad_corpus, tar_path)
    manifest = tmp_path / "t.csv"
    create_manifest(tar_path, manifest, ext="wav,flac", quiet=True)
    report = tmp_path / "r.jsonl"
    assert main(["check", str(manifest), "--report", str(report), "--quiet"]) == 1
    found = _report(report)
    assert set(found) == {"empty", "stereo", "sub/rate8k", "nan"}
    assert all(r["archive"] == str(tar_path.absolute()) for r in found.values())
    good = [e for e in read_manifest(manifest) if e.fileid.startswith(("good", "sub/good"))]
    write_manifest(good, manifest)
    assert main(["check", str(manifest), "--report", str(report), "--quiet"]) == 0
    assert report.read_text() == ""


def test_truncated_archive_range_is_reported(corpus, tmp_path: Path) -> None:
    """A byte range past the end of the archive is 'unreadable' with a hint, not a crash."""
    root, _ = corpus
    tar_path = tmp_path / "c.tar"
    make_tar(root, tar_path)
    entry = ManifestEntry("x", "x.wav", 10, str(tar_path), tar_path.stat().st_size - 10, 5000)
    write_manifest([entry], tmp_path / "m.csv")
    assert main(["check", str(tmp_path / "m.csv"), "--report", str(tmp_path / "r"), "--quiet"]) == 1
    assert "past the end of the archive" in _report(tmp_path / "r")["x"]["reason"]
