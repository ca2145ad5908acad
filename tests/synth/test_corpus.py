"""The synthetic corpus: deterministic for a seed (voice by voice, across processes, whatever the
number of workers), consistent files (manifest, WAV, alignments, item file), and alignments that
fit the audio (silence is quiet, phones are where the item file says)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from sslspeech.data.manifest import read_manifest
from sslspeech.errors import ConfigError
from sslspeech.features import mfcc
from sslspeech.synth import VOICES, make_corpus
from sslspeech.synth.corpus import SIL, Segment, frame_labels, segments_from_events

SPEAKERS, UTTERANCES = 2, 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), SPEAKERS, UTTERANCES, seed=7)


def digest(folder: Path) -> dict[str, str]:
    """md5 of every output file except the manifest (its paths are relative, so equal anyway)."""
    names = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in names}


def test_deterministic_for_a_seed(corpus, tmp_path):
    """A second run with the same seed and 1 worker writes byte-identical files; another seed
    changes the audio."""
    again = make_corpus(tmp_path / "again", SPEAKERS, UTTERANCES, seed=7, workers=1)
    assert digest(again) == digest(corpus)
    other = make_corpus(tmp_path / "other", 1, 1, seed=8)
    assert digest(other)["wav/m1_0000.wav"] != digest(corpus)["wav/m1_0000.wav"]


def test_every_voice_is_deterministic_across_processes():
    """Each built-in voice renders the same samples and events in two fresh processes."""
    script = (
        "import hashlib, sys\n"
        "from sslspeech.synth.corpus import VOICES\n"
        "from sslspeech.synth.espeak import Engine\n"
        "engine = Engine()\n"
        "for v in VOICES:\n"
        "    u = engine.speak('The judge saw a thin red fish.', v.voice, v.rate, v.pitch, seed=5)\n"
        "    print(v.speaker, hashlib.md5(u.samples.tobytes() + repr(u.phonemes).encode())"
        ".hexdigest())\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout
    assert len(runs[0].stdout.splitlines()) == len(VOICES)


def test_files_agree(corpus):
    """Manifest, WAVs, alignments and meta describe the same utterances (16 kHz mono 16-bit)."""
    manifest = read_manifest(corpus / "manifest.csv")
    meta = json.loads((corpus / "meta.json").read_text())
    alignments = [
        json.loads(line) for line in (corpus / "alignments.jsonl").read_text().splitlines()
    ]
    assert len(manifest) == len(alignments) == meta["num_utterances"] == SPEAKERS * UTTERANCES
    assert [a["name"] for a in alignments] == [e.fileid for e in manifest]
    assert {e.fileid.split("_")[0] for e in manifest} == {"m1", "f1"}
    for entry, alignment in zip(manifest, alignments, strict=True):
        info = soundfile.info(entry.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == entry.num_samples
        assert len(alignment["phones"]) == entry.num_samples // 160
        assert alignment["phones"][0] == SIL and alignment["phones"][-1] == SIL
        assert set(alignment["phones"]) <= set(meta["phones"])
    assert meta["total_seconds"] == pytest.approx(sum(manifest.num_samples) / 16000, abs=1e-3)


def items(folder: Path) -> list[list[str]]:
    lines = (folder / "phones.item").read_text().splitlines()
    assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
    return [line.split() for line in lines[1:]]


def test_item_file(corpus):
    """Tokens: 7 fields, inside the file, with frames at 100 and 50 Hz (fastabx slicing), labels
    matching the alignment at their middle, contexts matching their neighbours."""
    manifest = {e.fileid: e.num_samples for e in read_manifest(corpus / "manifest.csv")}
    alignments = {}
    for line in (corpus / "alignments.jsonl").read_text().splitlines():
        record = json.loads(line)
        alignments[record["name"]] = record["phones"]
    tokens = items(corpus)
    assert len(tokens) > 20
    for i, (fileid, onset, offset, phone, _prev, nxt, speaker) in enumerate(tokens):
        assert fileid.startswith(speaker + "_") and phone != SIL
        start, end = Decimal(onset), Decimal(offset)
        assert 0 <= start < end <= Decimal(manifest[fileid]) / 16000
        for rate in (100, 50):
            first = int(np.ceil(float(start) * rate - 0.5))
            last = int(np.floor(float(end) * rate - 0.5))
            assert first <= last
        middle = int((start + end) / 2 * 100)
        assert alignments[fileid][middle] == phone
        if i + 1 < len(tokens) and tokens[i + 1][0] == fileid and tokens[i + 1][1] == offset:
            assert nxt == tokens[i + 1][3] and tokens[i + 1][4] == phone


def test_silence_is_quieter_than_phones(corpus):
    """Frames labelled SIL have lower MFCC energy (c0) than phone frames in every utterance."""
    for line in (corpus / "alignments.jsonl").read_text().splitlines():
        record = json.loads(line)
        wav, _ = soundfile.read(corpus / "wav" / f"{record['name']}.wav", dtype="float32")
        c0 = mfcc(torch.from_numpy(wav), deltas=False)[:, 0].numpy()
        labels = np.array(record["phones"][: len(c0)])
        assert c0[labels == SIL].mean() < c0[labels != SIL].mean() - 5.0


def test_rerun_keeps_a_complete_corpus(corpus):
    """Same parameters: nothing is rewritten."""
    before = (corpus / "meta.json").stat().st_mtime_ns
    make_corpus(corpus, SPEAKERS, UTTERANCES, seed=7)
    assert (corpus / "meta.json").stat().st_mtime_ns == before


def test_bad_parameters(tmp_path):
    """Speaker and utterance counts outside the built-in range are ConfigErrors."""
    with pytest.raises(ConfigError, match="speakers"):
        make_corpus(tmp_path, speakers=len(VOICES) + 1)
    with pytest.raises(ConfigError, match="utterances"):
        make_corpus(tmp_path, speakers=1, utterances=0)


def test_segments_from_events():
    """Stress marks are stripped, pauses become SIL (merged), zero-length phones and non-phone
    marks are dropped, padding is SIL, and each phone ends where the next event starts."""
    events = [
        (0, "h"),
        (100, "'a"),
        (250, "l"),
        (250, "z"),
        (300, ";"),
        (300, ",I"),
        (400, "_:"),
        (450, "_"),
    ]
    segments = segments_from_events(events, 1000, lead=0.5, speech_end=0.45, total=1.2)
    assert segments == [
        Segment(0.0, 0.5, SIL),
        Segment(0.5, 0.6, "h"),
        Segment(0.6, 0.75, "a"),
        Segment(0.75, 0.8, "z"),
        Segment(0.8, 0.9, "I"),
        Segment(0.9, 1.2, SIL),
    ]
    labels = frame_labels(segments, 19200)
    assert len(labels) == 120 and labels[49] == SIL and labels[50] == "h" and labels[89] == "I"


def test_cli(tmp_path):
    """`sslspeech synth OUT --speakers 1 --utterances 1` writes a complete corpus."""
    from sslspeech.cli import main

    assert main(["synth", str(tmp_path / "c"), "--speakers", "1", "--utterances", "1"]) == 0
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["num_utterances"] == 1
