"""Manifest reading and writing: the three formats round-trip, errors name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sslspeech.data.manifest import ManifestEntry, detect_format, read_manifest, write_manifest
from sslspeech.errors import DataError

ENTRIES = [
    ManifestEntry("a/x", "/data/a/x.wav", 16000, units=(1, 2, 3)),
    ManifestEntry("b", "/data/b.flac", 0, units=()),
    ManifestEntry("c,with comma", "/data/c,with comma.wav", 5, units=(7,)),
]
TAR_ENTRIES = [
    ManifestEntry("m1", "m1.wav", 100, archive="/data/t.tar", byte_offset=512, byte_size=244),
    ManifestEntry("m2", "d/m2.wav", 7, archive="/data/t.tar", byte_offset=1024, byte_size=58),
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_with_units_and_archives(tmp_path: Path, fmt: str) -> None:
    """CSV and JSONL keep every field: units lists (also empty) and tar byte ranges."""
    for entries in (ENTRIES, TAR_ENTRIES):
        path = tmp_path / f"m.{fmt}"
        assert write_manifest(entries, path) == len(entries)
        manifest = read_manifest(path)
        assert list(manifest) == entries
        assert manifest.has_units == (entries is ENTRIES)


def test_tsv_round_trip_is_fairseq_layout(tmp_path: Path) -> None:
    """TSV: root on line 1, then relpath<TAB>num_samples; fileid is relpath without extension."""
    entries = [ManifestEntry("a/x", "/data/a/x.wav", 16000), ManifestEntry("b", "/data/b.flac", 3)]
    path = tmp_path / "train.tsv"
    write_manifest(entries, path)
    assert path.read_text().splitlines() == ["/data", "a/x.wav\t16000", "b.flac\t3"]
    assert list(read_manifest(path)) == entries


def test_csv_units_are_space_separated_and_paths_relative_to_manifest(tmp_path: Path) -> None:
    """A hand-written CSV: extra columns ignored, units column parsed, relative paths resolved."""
    path = tmp_path / "sub" / "m.csv"
    path.parent.mkdir()
    path.write_text("path,speaker,fileid,num_samples,units\nw/a.wav,s1,a,320,4 5 6\n")
    (entry,) = read_manifest(path)
    assert entry == ManifestEntry("a", str(tmp_path / "sub" / "w/a.wav"), 320, units=(4, 5, 6))


def test_format_detected_from_content(tmp_path: Path) -> None:
    """Without a known extension the first line decides."""
    (tmp_path / "a").write_text('{"fileid": "x", "path": "/x.wav", "num_samples": 1}\n')
    (tmp_path / "b").write_text("fileid,path,num_samples\nx,/x.wav,1\n")
    (tmp_path / "c").write_text("/root\nx.wav\t1\n")
    assert [detect_format(tmp_path / n) for n in "abc"] == ["jsonl", "csv", "tsv"]
    assert [read_manifest(tmp_path / n)[0].fileid for n in "abc"] == ["x", "x", "x"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "fileid,path\na,/a.wav\n", "m.csv:1: header lacks num_samples"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav,1\nb,/b.wav,1.5\n", "m.csv:3: num_samples"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav,1\na,/b.wav,2\n", "duplicate fileid 'a'"),
        ("m.csv", "fileid,path,num_samples\na,/a.wav\n", "m.csv:2: 2 columns"),
        ("m.csv", "fileid,path,num_samples,units\na,/a.wav,3,1 x\n", "m.csv:2: units"),
        ("m.tsv", "/r\na.wav\t1\nb.wav\tten\n", "m.tsv:3: num_samples"),
        ("m.jsonl", '{"fileid": "a", "path": "/a"}\n', "m.jsonl:1: missing num_samples"),
        ("m.jsonl", '{"fileid": "a", "path": "/a", "num_samples": 1}\n{bad\n', "m.jsonl:2"),
        (
            "m.jsonl",
            '{"fileid": "a", "path": "/a", "num_samples": 1, "units": [1.5]}\n',
            ":1: units",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Missing columns, non-integer counts, duplicates, bad units: DataError with file:line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        read_manifest(path)


def test_tsv_cannot_hold_archive_members(tmp_path: Path) -> None:
    """fairseq TSV has no byte-range columns: writing tar members there is refused."""
    with pytest.raises(DataError, match="CSV or JSONL"):
        write_manifest(TAR_ENTRIES, tmp_path / "m.tsv")


def test_write_is_streaming_and_jsonl_is_plain_json(tmp_path: Path) -> None:
    """write_manifest accepts a generator; JSONL lines are self-contained objects."""
    path = tmp_path / "m.jsonl"
    write_manifest((e for e in ENTRIES), path)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "fileid": "a/x",
        "path": "/data/a/x.wav",
        "num_samples": 16000,
        "units": [1, 2, 3],
    }


def test_manifest_lookup_and_units_view(tmp_path: Path) -> None:
    """index_of finds a fileid, units_array returns int64 views, unknown ids raise DataError."""
    path = tmp_path / "m.csv"
    write_manifest(ENTRIES, path)
    manifest = read_manifest(path)
    assert manifest.index_of("b") == 1
    assert manifest.units_array(0).tolist() == [1, 2, 3]
    assert manifest.num_samples.tolist() == [16000, 0, 5]
    assert manifest[-1].fileid == "c,with comma"
    with pytest.raises(DataError, match="no entry with fileid 'zz'"):
        manifest.index_of("zz")
