"""Data pipeline benchmarks; one JSON line per figure.

- masking of a 16 x 780-frame batch (HuBERT settings: mask_prob 0.8, span 10, min_masks 2,
  padded rows), ms per call, against spidr 0.2's loop generator (~49 ms on the reference CPU);
- manifest creation for 10 000 small WAV files (files/s, 1 and N worker processes);
- decode throughput (audio seconds per second) from WAV files, FLAC files and FLAC in a tar.

Usage: python bench/data.py [--files 10000] [--workers 2] [--quick] [--only masking]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sslspeech.data.audio import load_audio
from sslspeech.data.manifest import read_manifest
from sslspeech.data.masking import compute_mask, compute_mask_indices
from sslspeech.data.scan import create_manifest

SPIDR_REFERENCE_MS = 49.0
RATE = 16_000


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def per_call_ms(function: Callable[[], object], calls: int, rounds: int = 5) -> tuple[float, float]:
    """Median over `rounds` of the mean wall and CPU time per call (ms); CPU time is the
    steadier figure on a shared machine."""
    for _ in range(max(10, calls // 10)):
        function()
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            function()
        wall.append((time.perf_counter() - start) / calls * 1e3)
        cpu.append((time.process_time() - start_cpu) / calls * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def bench_masking(calls: int) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(500, 781, (16,), generator=generator)
    lengths[0] = 780
    cases = {
        "compute_mask": lambda: compute_mask((16, 780), 0.8, 10, 2, lengths, generator),
        "compute_mask_indices (spidr form)": lambda: compute_mask_indices(
            (16, 780), 0.8, 10, 2, lengths, generator
        ),
    }
    for name, function in cases.items():
        ms, cpu_ms = per_call_ms(function, calls)
        emit(
            bench="masking",
            function=name,
            shape=[16, 780],
            ms_per_call=round(ms, 4),
            cpu_ms_per_call=round(cpu_ms, 4),
            speedup_vs_spidr_0_2=round(SPIDR_REFERENCE_MS / ms, 1),
            threads=torch.get_num_threads(),
        )


def write_files(folder: Path, count: int, samples: int, fmt: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    wav = (0.1 * rng.standard_normal(samples)).astype(np.float32)
    for number in range(count):
        sub = folder / f"spk{number % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"utt{number:06d}.{fmt}", np.roll(wav, number), RATE, subtype="PCM_16")


def bench_manifest(root: Path, files: int, workers: int) -> None:
    folder = root / "small"
    write_files(folder, files, 1600, "wav")
    for count in sorted({1, workers}):
        output = root / f"manifest_{count}.csv"
        start = time.perf_counter()
        report = create_manifest(folder, output, workers=count, quiet=True)
        seconds = time.perf_counter() - start
        emit(
            bench="manifest",
            files=report.written,
            workers=count,
            seconds=round(seconds, 3),
            files_per_s=round(report.written / seconds, 1),
        )


def decode_rate(manifest_path: Path) -> tuple[float, float]:
    entries = list(read_manifest(manifest_path))
    start = time.perf_counter()
    total = sum(len(load_audio(entry)) for entry in entries)
    seconds = time.perf_counter() - start
    return total / RATE, seconds


def bench_decode(root: Path, files: int, seconds_each: float) -> None:
    samples = int(seconds_each * RATE)
    for fmt in ("wav", "flac"):
        folder = root / f"decode_{fmt}"
        write_files(folder, files, samples, fmt, seed=1)
        manifest = root / f"decode_{fmt}.csv"
        create_manifest(folder, manifest, ext=f".{fmt}", quiet=True)
        audio, seconds = decode_rate(manifest)
        emit(
            bench="decode",
            source=f"{fmt} files",
            audio_s=round(audio, 1),
            audio_s_per_s=round(audio / seconds, 1),
        )
    tar_path = root / "decode_flac.tar"
    with tarfile.open(tar_path, "w") as archive:
        archive.add(root / "decode_flac", arcname="decode_flac")
    manifest = root / "decode_tar.csv"
    create_manifest(tar_path, manifest, ext=".flac", quiet=True)
    audio, seconds = decode_rate(manifest)
    emit(
        bench="decode",
        source="flac in tar (byte ranges)",
        audio_s=round(audio, 1),
        audio_s_per_s=round(audio / seconds, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files for the manifest bench")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to compare")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument(
        "--only", choices=("masking", "manifest", "decode"), default=None, help="one benchmark"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = 500 if args.quick else args.files
    if args.only in (None, "masking"):
        bench_masking(100 if args.quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in (None, "manifest"):
            bench_manifest(root, files, args.workers)
        if args.only in (None, "decode"):
            bench_decode(root, 20 if args.quick else 200, 10.0)


if __name__ == "__main__":
    main()
