"""A synthetic, phone-aligned English corpus from espeak-ng: audio, alignments, item file.

`make_corpus(out_dir, speakers=4, utterances=20, seed=0)` writes
- `wav/<fileid>.wav`: 16 kHz mono 16-bit PCM; fileid is `<speaker>_<NNNN>` (e.g. `m1_0003`),
- `manifest.csv`: `fileid,path,num_samples` (paths relative to the manifest's folder),
- `alignments.jsonl`: `{"name": fileid, "phones": [...]}`, one label per 10 ms frame: frame t
  covers [t, t + 1) x 10 ms and takes the phone at its centre; `num_samples // 160` frames;
  pauses and the padding are `SIL`,
- `phones.item`: ZeroSpeech item file (`#file onset offset #phone prev-phone next-phone speaker`),
  one line per non-silent phone that has frames at 100 Hz and 50 Hz (fastabx slicing),
- `meta.json` (written last: the corpus is complete when it exists).

Speakers are espeak voice variants with their own rate and pitch; each utterance varies rate,
pitch, pitch range, leading silence, gain, a first-order channel tilt and white noise (15-30 dB
SNR), all drawn from the seed. espeak's synthesis state carries over between utterances of one
process, so every speaker is synthesized in a fresh process (`sslspeech.synth.worker`): the
output depends only on (seed, speakers, utterances), not on the number of workers or on
earlier calls.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import numpy as np

from sslspeech.data.audio import SAMPLE_RATE
from sslspeech.errors import ConfigError, SSLSpeechError
from sslspeech.synth.lexicon import sentence
from sslspeech.synth.resample import resample_poly
from sslspeech.utils.fileio import atomic_open, atomic_path

log = logging.getLogger(__name__)

FRAME_SHIFT = 160  # alignment frames: 10 ms
SIL = "SIL"
TRAILING_SILENCE = 0.25  # seconds, so that utterance-final phones have frames
CORPUS_VERSION = 1
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"
_ITEM_RATES = ((100, 160), (50, 320))  # (frame rate, hop) every kept token must have frames at


@dataclass(frozen=True)
class Voice:
    """A speaker: espeak voice name, base speaking rate (words/min) and pitch (0-100)."""

    speaker: str
    voice: str
    rate: int
    pitch: int


VOICES: tuple[Voice, ...] = tuple(
    Voice(voice.split("+")[1].lower(), voice, rate, pitch)
    for voice, rate, pitch in (
        ("en-us+m1", 150, 40),
        ("en-us+f1", 170, 60),
        ("en-us+m3", 140, 35),
        ("en-us+f4", 160, 70),
        ("en-us+m2", 165, 45),
        ("en-us+f2", 155, 55),
        ("en-us+m4", 175, 30),
        ("en-us+f3", 145, 65),
        ("en-us+m5", 160, 50),
        ("en-us+f5", 180, 58),
        ("en-us+m6", 150, 38),
        ("en-us+steph", 165, 62),
        ("en-us+m7", 155, 42),
        ("en-us+klatt3", 150, 60),
        ("en-us+Alex", 170, 45),
        ("en-us+shelby", 160, 66),
        ("en-us+adam", 145, 40),
        ("en-us+klatt6", 165, 55),
        ("en-us+david", 175, 35),
        ("en-us+michel", 150, 52),
        ("en-us+travis", 160, 48),
        ("en-us+Andy", 155, 44),
        ("en-us+benjamin", 165, 36),
        ("en-us+edward2", 145, 46),
    )
)


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of an utterance, in seconds."""

    onset: float
    offset: float
    label: str


def _phone_label(name: str) -> str | None:
    """espeak mnemonic -> our label: pauses are SIL, stress marks go, non-phone marks are None."""
    name = name.strip("\0 ")
    if name.startswith("_"):
        return SIL
    label = name.replace("'", "").replace(",", "")
    if not any(c.isalnum() or c == "@" for c in label):
        return None
    return label


def segments_from_events(
    events: Sequence[tuple[int, str]],
    event_rate: int,
    lead: float,
    speech_end: float,
    total: float,
) -> list[Segment]:
    """Cover [0, total] with segments: SIL padding, then one per espeak phoneme event.

    Each phone ends where the next kept event starts; zero-length phones are dropped and
    consecutive SIL segments merged.
    """
    kept = [(lead + s / event_rate, lab) for s, n in events if (lab := _phone_label(n)) is not None]
    bounds = [(0.0, SIL), *kept, (lead + speech_end, SIL)]
    segments: list[Segment] = []
    ends = [t for t, _ in bounds[1:]] + [total]
    for (start, label), end in zip(bounds, ends, strict=True):
        end = max(start, min(end, total))
        if end <= start:
            continue
        if segments and segments[-1].label == SIL and label == SIL:
            segments[-1] = Segment(segments[-1].onset, end, SIL)
        else:
            segments.append(Segment(start, end, label))
    return segments


def frame_labels(segments: Sequence[Segment], num_samples: int) -> list[str]:
    """One label per 10 ms frame: the segment holding the frame centre."""
    labels: list[str] = []
    index = 0
    for t in range(num_samples // FRAME_SHIFT):
        centre = (t + 0.5) * FRAME_SHIFT / SAMPLE_RATE
        while index + 1 < len(segments) and segments[index].offset <= centre:
            index += 1
        labels.append(segments[index].label)
    return labels


def _has_frames(onset: str, offset: str, rate: int, hop: int, num_samples: int) -> bool:
    """fastabx slicing: frames i with centre (i + 1/2) / rate in [onset, offset], all < T."""
    half = Decimal(1) / 2
    first = (Decimal(onset) * rate - half).to_integral_value(ROUND_CEILING)
    last = (Decimal(offset) * rate - half).to_integral_value(ROUND_FLOOR)
    frames = 0 if num_samples < 400 else 1 + (num_samples - 400) // hop
    return first <= last and int(last) < frames


def item_lines(
    fileid: str, speaker: str, segments: Sequence[Segment], num_samples: int
) -> list[str]:
    """Item-file lines for the non-silent phones with frames at every rate of _ITEM_RATES."""
    lines = []
    for i, segment in enumerate(segments):
        if segment.label == SIL:
            continue
        onset, offset = f"{segment.onset:.4f}", f"{segment.offset:.4f}"
        if not all(_has_frames(onset, offset, r, h, num_samples) for r, h in _ITEM_RATES):
            continue
        prev = segments[i - 1].label if i > 0 else SIL
        nxt = segments[i + 1].label if i + 1 < len(segments) else SIL
        lines.append(f"{fileid} {onset} {offset} {segment.label} {prev} {nxt} {speaker}")
    return lines


def _sentence_pool(seed: int, size: int) -> list[str]:
    rng = np.random.default_rng([seed, 0x5E47])
    return [sentence(rng) for _ in range(size)]


def _degrade(speech: np.ndarray, rng: np.random.Generator, lead: int) -> np.ndarray:
    """Pad, tilt, add noise and scale one utterance (float64 in, int16 out)."""
    trail = int(TRAILING_SILENCE * SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(speech**2))) if speech.size else 0.0
    signal = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    tilt = rng.uniform(-0.7, 0.7)
    tilted = signal.copy()
    tilted[1:] += tilt * signal[:-1]
    tilted /= 1.0 + abs(tilt)
    snr_db = rng.uniform(15.0, 30.0)
    noisy = tilted + rms * 10 ** (-snr_db / 20) * rng.standard_normal(len(tilted))
    scaled = noisy * rng.uniform(0.5, 1.0)
    return np.clip(np.round(scaled * 32768), -32768, 32767).astype(np.int16)


def speaker_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Synthesize one speaker's utterances (runs in a fresh process; writes its WAV files)."""
    import soundfile

    from sslspeech.synth.espeak import Engine

    engine = Engine()
    voice = Voice(**job["voice"])
    pool: list[str] = job["pool"]
    records = []
    for u in range(job["utterances"]):
        rng = np.random.default_rng([job["seed"], job["speaker_index"], u])
        text = pool[int(rng.integers(len(pool)))]
        rate = voice.rate + int(rng.integers(-20, 21))
        pitch = voice.pitch + int(rng.integers(-10, 11))
        pitch_range = int(rng.integers(30, 81))
        espeak_seed = int(rng.integers(1, 2**31))
        said = engine.speak(text, voice.voice, rate, pitch, espeak_seed, pitch_range)
        speech = resample_poly(said.samples / 32768.0, 320, 441)
        lead = int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)
        audio = _degrade(speech, rng, lead)
        fileid = f"{voice.speaker}_{u:04d}"
        path = Path(job["out_dir"]) / "wav" / f"{fileid}.wav"
        with atomic_path(path) as tmp:
            soundfile.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        segments = segments_from_events(
            said.phonemes,
            said.sample_rate,
            lead / SAMPLE_RATE,
            len(said.samples) / said.sample_rate,
            len(audio) / SAMPLE_RATE,
        )
        records.append(
            {
                "fileid": fileid,
                "speaker": voice.speaker,
                "text": text,
                "rate": rate,
                "pitch": pitch,
                "pitch_range": pitch_range,
                "num_samples": len(audio),
                "segments": [asdict(s) for s in segments],
            }
        )
    return records


def _run_worker(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One speaker in a fresh `python -m sslspeech.synth.worker` process."""
    command = [sys.executable, "-m", "sslspeech.synth.worker"]
    done = subprocess.run(command, input=json.dumps(job), capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SSLSpeechError(
            f"synthesizing speaker {job['voice']['speaker']} failed (exit {done.returncode}):\n"
            f"{tail}"
        )
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def _write_manifest(out_dir: Path, records: Sequence[dict[str, Any]]) -> None:
    from sslspeech.data.manifest import ManifestEntry, write_manifest

    entries = (
        ManifestEntry(r["fileid"], f"wav/{r['fileid']}.wav", r["num_samples"]) for r in records
    )
    write_manifest(entries, out_dir / "manifest.csv")


def _write_outputs(out_dir: Path, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    inventory: set[str] = set()
    items: list[str] = []
    with atomic_open(out_dir / "alignments.jsonl", "w") as handle:
        for record in records:
            segments = [Segment(**s) for s in record["segments"]]
            labels = frame_labels(segments, record["num_samples"])
            inventory.update(labels)
            handle.write(json.dumps({"name": record["fileid"], "phones": labels}) + "\n")
            items.extend(
                item_lines(record["fileid"], record["speaker"], segments, record["num_samples"])
            )
    with atomic_open(out_dir / "phones.item", "w") as handle:
        handle.write(ITEM_HEADER + "\n")
        handle.writelines(line + "\n" for line in items)
    _write_manifest(out_dir, records)
    return {"phones": sorted(inventory), "num_items": len(items)}


def make_corpus(
    out_dir: str | os.PathLike[str],
    speakers: int = 4,
    utterances: int = 20,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Write the corpus to `out_dir` (see the module docstring) and return `out_dir`.

    `utterances` is per speaker. A complete corpus with the same parameters is kept as is.
    """
    if not 1 <= speakers <= len(VOICES):
        raise ConfigError(
            f"speakers must be in [1, {len(VOICES)}] (built-in voices), got {speakers}"
        )
    if utterances < 1:
        raise ConfigError(f"utterances (per speaker) must be >= 1, got {utterances}")
    out = Path(out_dir)
    params = {"speakers": speakers, "utterances": utterances, "seed": seed}
    meta_path = out / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("params") == params:
        log.info("%s already holds this corpus; kept", out)
        return out
    meta_path.unlink(missing_ok=True)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    pool = _sentence_pool(seed, max(8, utterances))
    jobs = [
        {
            "voice": asdict(VOICES[i]),
            "speaker_index": i,
            "utterances": utterances,
            "seed": seed,
            "pool": pool,
            "out_dir": str(out),
        }
        for i in range(speakers)
    ]
    workers = max(1, min(workers or os.cpu_count() or 1, speakers))
    with ThreadPoolExecutor(workers) as threads:
        records = [r for batch in threads.map(_run_worker, jobs) for r in batch]
    summary = _write_outputs(out, records)
    expected = {f"{r['fileid']}.wav" for r in records}
    for stale in (out / "wav").glob("*.wav"):
        if stale.name not in expected:
            stale.unlink()
    total = sum(r["num_samples"] for r in records) / SAMPLE_RATE
    meta = {
        "generator": "sslspeech.synth",
        "version": CORPUS_VERSION,
        "params": params,
        "sample_rate": SAMPLE_RATE,
        "alignment_frame_rate": SAMPLE_RATE // FRAME_SHIFT,
        "alignment_rule": "frame t covers [t, t+1) * 10 ms, labelled by the phone at its centre",
        "num_utterances": len(records),
        "total_seconds": round(total, 3),
        "speakers": [asdict(VOICES[i]) for i in range(speakers)],
        "utterances": [
            {k: r[k] for k in ("fileid", "speaker", "text", "rate", "pitch", "pitch_range")}
            for r in records
        ],
        **summary,
    }
    with atomic_open(meta_path, "w") as handle:
        json.dump(meta, handle, indent=1)
    log.info("synthetic corpus: %d utterances, %.1f s in %s", len(records), total, out)
    return out
