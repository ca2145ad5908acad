"""Bad data stops at the first stage that sees it, with a message saying what and where."""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sslspeech.cli import main
from sslspeech.data.audio import load_audio, read_range
from sslspeech.data.check import check_manifest
from sslspeech.data.dataset import AudioDataset
from sslspeech.data.manifest import ManifestEntry, read_manifest, write_manifest
from sslspeech.errors import DataError
from tests.data.conftest import RATE, tone


def _wav(path: Path, samples: int = 1600, rate: int = RATE) -> Path:
    sf.write(path, tone(samples), rate, subtype="PCM_16")
    return path


def _nan_wav(path: Path) -> Path:
    """A float WAV with one NaN and one inf sample (PCM cannot hold them)."""
    wav = tone(1600)
    wav[10], wav[20] = np.nan, np.inf
    sf.write(path, wav, RATE, subtype="FLOAT")
    return path


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def test_nan_audio_is_refused_by_features_naming_the_file(tmp_path, capsys):
    """`features` on a manifest with NaN/inf audio exits 1 naming the file; no shard is kept."""
    good, bad = _wav(tmp_path / "good.wav"), _nan_wav(tmp_path / "bad.wav")
    manifest = tmp_path / "m.csv"
    write_manifest([ManifestEntry("good", str(good), 1600), ManifestEntry("bad", str(bad), 1600)],
                   manifest)  # fmt: skip
    out = tmp_path / "feats"
    assert main(["features", str(manifest), str(out), "--quiet"]) == 1
    (error,) = _error_lines(capsys)
    assert str(bad) in error and "2 NaN/inf samples" in error and "sslspeech check" in error
    assert not list(out.glob("shard-*"))


@pytest.mark.parametrize(
    "content", ["", "fileid,path,num_samples\n", "\ufefffileid,path,num_samples\n"]
)
def test_empty_manifest_is_refused_by_check_and_features(tmp_path, capsys, content):
    """A 0-byte or header-only manifest is an error for `check` and `features`, not a pass."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(content, encoding="utf-8")
    assert main(["check", str(manifest), "--quiet"]) == 1
    assert main(["features", str(manifest), str(tmp_path / "f"), "--quiet"]) == 1
    errors = _error_lines(capsys)
    assert len(errors) == 2 and all(f"{manifest}: the manifest lists no utterances" in e
                                    for e in errors)  # fmt: skip


def test_units_beyond_num_classes_name_manifest_fileid_and_key(tmp_path):
    """Labels outside [0, num_classes) are refused where the dataset reads them, naming the
    manifest, the fileid, the key and the value to set."""
    entries = [
        ManifestEntry("a", str(_wav(tmp_path / "a.wav", 3200)), 3200, units=(0,) * 10),
        ManifestEntry("b", str(_wav(tmp_path / "b.wav", 3200)), 3200, units=(1,) * 9 + (7,)),
    ]
    manifest = tmp_path / "m.csv"
    write_manifest(entries, manifest)
    AudioDataset(manifest, labels="manifest", num_classes=8)
    with pytest.raises(DataError) as raised:
        AudioDataset(manifest, labels="manifest", num_classes=2)
    message = str(raised.value)
    assert message.startswith(f"{manifest}: 'b' has unit 7 at position 9")
    assert "model.num_classes=2" in message and "set model.num_classes=8" in message


def test_8khz_audio_hint_names_a_fix_the_cli_has(tmp_path):
    """The sample-rate error tells how to convert the corpus, not a flag `features` lacks."""
    path = _wav(tmp_path / "low.wav", 800, rate=8000)
    with pytest.raises(DataError, match="sample rate 8000 Hz, expected 16000 Hz") as raised:
        load_audio(path)
    assert "sox" in str(raised.value) and "(pass resample=True" not in str(raised.value)


def test_missing_file_and_dangling_link_are_named_as_such(tmp_path):
    """A missing file reads 'no such audio file', a dangling link names its target; `check`
    reports the same instead of libsndfile's 'System error.'."""
    missing = tmp_path / "gone.wav"
    with pytest.raises(DataError, match=rf"{missing}: no such audio file; restore it"):
        load_audio(missing)
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(DataError, match=r"a symlink to .*nowhere\.wav, which does not exist"):
        load_audio(link)
    manifest = tmp_path / "m.csv"
    write_manifest([ManifestEntry("gone", str(missing), 1600)], manifest)
    (problem,) = check_manifest(manifest, quiet=True)
    assert "no such audio file" in problem.reasons[0] and "System error" not in problem.reasons[0]


def test_non_utf8_file_name_is_named_as_such(tmp_path, caplog):
    """A file name that is not UTF-8 is reported as that (by load_audio and `manifest`), not as
    an unreadable audio header."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    ok = _wav(corpus / "ok.wav")
    name = os.fsdecode(b"caf\xe9.wav")  # latin-1 bytes: a surrogate-escaped str in Python
    (corpus / name).write_bytes(ok.read_bytes())
    with pytest.raises(DataError, match="the file name is not valid UTF-8"):
        load_audio(corpus / name)
    with caplog.at_level(logging.WARNING):
        assert main(["manifest", str(corpus), str(tmp_path / "m.csv"), "--quiet"]) == 0
    assert "not valid UTF-8" in caplog.text and "unreadable audio header" not in caplog.text
    assert [e.fileid for e in read_manifest(tmp_path / "m.csv")] == ["ok"]


def test_dangling_symlink_is_warned_by_manifest(tmp_path, caplog):
    """`manifest` warns about a dangling symlink, naming the link and its target."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _wav(corpus / "ok.wav")
    (corpus / "lost.wav").symlink_to(tmp_path / "moved" / "lost.wav")
    with caplog.at_level(logging.WARNING):
        assert main(["manifest", str(corpus), str(tmp_path / "m.csv"), "--quiet"]) == 0
    expected = f"{corpus / 'lost.wav'} is a symlink to {tmp_path / 'moved' / 'lost.wav'}"
    assert expected in caplog.text


def _tar_manifest(tmp_path: Path, offset_shift: int) -> tuple[Path, Path, int]:
    """A tar holding one WAV and a CSV manifest whose byte_offset is shifted by `offset_shift`."""
    wav = _wav(tmp_path / "a.wav")
    archive = tmp_path / "audio.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(wav, arcname="a.wav")
    with tarfile.open(archive) as tar:
        member = tar.getmember("a.wav")
        offset, size = member.offset_data + offset_shift, member.size
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "fileid,path,num_samples,archive,byte_offset,byte_size\n"
        f"a,a.wav,1600,{archive},{offset},{size}\n"
    )
    return manifest, archive, offset


def test_wrong_tar_offset_says_the_manifest_may_be_stale(tmp_path):
    """Bytes at a wrong offset are 'not audio' at offset N of the archive, with the way out."""
    manifest, archive, offset = _tar_manifest(tmp_path, offset_shift=-512)
    (entry,) = read_manifest(manifest)
    with pytest.raises(DataError) as raised:
        load_audio(entry)
    message = str(raised.value)
    assert f"{archive}: the " in message and f"bytes at offset {offset} (member a.wav)" in message
    assert "manifest may be stale" in message and "BytesIO" not in message
    (problem,) = check_manifest(manifest, quiet=True)
    assert f"offset {offset}" in problem.reasons[0] and "BytesIO" not in problem.reasons[0]


def test_negative_tar_offset_is_refused_where_the_manifest_is_read(tmp_path):
    """A negative byte_offset names the manifest line (not `[Errno 22]`); read_range refuses
    it too."""
    manifest, archive, _ = _tar_manifest(tmp_path, offset_shift=-(10**6))
    with pytest.raises(DataError, match=rf"{manifest}:2: byte_offset and byte_size must be >= 0"):
        read_manifest(manifest)
    with pytest.raises(DataError, match="is negative; the manifest is corrupt"):
        read_range(str(archive), -5, 10)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_utf8_bom_manifest_is_read(tmp_path, suffix):
    """A manifest saved with a UTF-8 byte-order mark (Excel, Notepad) reads like one without."""
    wav = _wav(tmp_path / "a.wav")
    plain = tmp_path / f"plain{suffix}"
    write_manifest([ManifestEntry("a", str(wav), 1600)], plain, root=tmp_path)
    bom = tmp_path / f"bom{suffix}"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert list(read_manifest(bom)) == list(read_manifest(plain))
