"""Benchmark of the features/units stack on the synthetic corpus; one JSON line per figure.

- synthetic corpus generation (18 voices, ~20 minutes of speech);
- MFCC extraction speed (audio seconds per second), in-memory and through the sharded store;
- k-means k=100 on the 39-dim MFCC frames of the corpus: ours (torch, default settings) vs
  scikit-learn MiniBatchKMeans with fairseq's learn_kmeans.py settings (batch 10000, n_init 20,
  max_iter 100, k-means++, max_no_improvement 100, reassignment_ratio 0, tol 0), both scored
  with the same exact inertia on every frame;
- peak RSS of feature extraction for the corpus manifest and for 4x as many files (each in a
  fresh subprocess, `resource.getrusage`), to show memory does not grow with the file count.

Usage: python bench/units.py [--corpus DIR] [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"name": name, "value": value, "unit": unit, **extra}), flush=True)


def corpus(args: argparse.Namespace, work: Path) -> Path:
    from sslspeech.synth import make_corpus

    if args.corpus:
        return Path(args.corpus)
    start = time.perf_counter()
    out = make_corpus(work / "corpus", speakers=args.speakers, utterances=args.utterances, seed=0)
    seconds = time.perf_counter() - start
    meta = json.loads((out / "meta.json").read_text())
    emit(
        "synth_corpus_seconds",
        round(seconds, 2),
        "s",
        speakers=args.speakers,
        utterances=meta["num_utterances"],
        audio_minutes=round(meta["total_seconds"] / 60, 2),
    )
    return out


def mfcc_speed(manifest: Path, work: Path, device: str) -> Path:
    from sslspeech.data.audio import load_audio
    from sslspeech.data.manifest import read_manifest
    from sslspeech.features import mfcc
    from sslspeech.features.extract import extract_features

    entries = read_manifest(manifest)
    audio_seconds = float(entries.num_samples.sum()) / 16000
    wavs = [torch.from_numpy(load_audio(entry)).to(device) for entry in entries]
    mfcc(wavs[0])
    start = time.perf_counter()
    for wav in wavs:
        mfcc(wav)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    compute = time.perf_counter() - start
    emit("mfcc_compute_speed", round(audio_seconds / compute, 1), "audio s/s", device=device)
    start = time.perf_counter()
    store = extract_features(manifest, work / "mfcc", device=device, quiet=True)
    total = time.perf_counter() - start
    emit(
        "mfcc_extract_speed",
        round(audio_seconds / total, 1),
        "audio s/s",
        device=device,
        note="decode WAV + MFCC + write the store, one shard",
        audio_seconds=round(audio_seconds, 1),
    )
    return store


def kmeans_comparison(store_dir: Path, device: str, threads: int) -> None:
    from sslspeech.features import open_store
    from sslspeech.units import KMeans

    store = open_store(store_dir)
    frames = torch.from_numpy(np.concatenate([np.asarray(store[k]) for k in store]))
    KMeans.fit(frames[:5000], 10, seed=0, device=device)  # warm-up (lazy init, CUDA context)
    start = time.perf_counter()
    ours = KMeans.fit(frames, 100, seed=0, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ours_seconds = time.perf_counter() - start
    ours_inertia = ours.inertia(frames)
    emit(
        "kmeans_ours_seconds",
        round(ours_seconds, 3),
        "s",
        frames=int(frames.shape[0]),
        k=100,
        device=device,
        inertia=ours_inertia,
        iterations=int(ours.metadata["iterations"]),
        settings="KMeans.fit defaults: greedy k-means++ on 25.6k rows, Lloyd, inertia_tol 1e-3",
    )
    start = time.perf_counter()
    tight = KMeans.fit(frames, 100, seed=0, device=device, inertia_tol=1e-4)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    emit(
        "kmeans_ours_tight_seconds",
        round(time.perf_counter() - start, 3),
        "s",
        device=device,
        inertia=tight.inertia(frames),
        iterations=int(tight.metadata["iterations"]),
        settings="inertia_tol 1e-4 (information)",
    )
    try:
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits
    except ImportError:
        emit("kmeans_sklearn_seconds", float("nan"), "s", note="scikit-learn not installed")
        return
    start = time.perf_counter()
    with threadpool_limits(threads):
        sk = MiniBatchKMeans(
            n_clusters=100,
            init="k-means++",
            max_iter=100,
            batch_size=10000,
            tol=0.0,
            max_no_improvement=100,
            init_size=None,
            n_init=20,
            reassignment_ratio=0.0,
            compute_labels=False,
            random_state=0,
        ).fit(frames.numpy())
    sk_seconds = time.perf_counter() - start
    sk_inertia = KMeans(sk.cluster_centers_).inertia(frames)
    emit(
        "kmeans_sklearn_seconds",
        round(sk_seconds, 3),
        "s",
        frames=int(frames.shape[0]),
        k=100,
        inertia=sk_inertia,
        steps=int(sk.n_steps_),
        settings="fairseq learn_kmeans.py MiniBatchKMeans",
        threads=threads,
    )
    emit("kmeans_speedup", round(sk_seconds / ours_seconds, 2), "x", goal=">= 10")
    emit(
        "kmeans_inertia_ratio",
        round(ours_inertia / sk_inertia, 5),
        "ours/sklearn",
        goal="<= 1 (no worse)",
    )


RSS_CHILD = """
import resource, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from sslspeech.features.extract import extract_features
extract_features(sys.argv[1], sys.argv[2], quiet=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(manifest: Path, work: Path, threads: int) -> None:
    from sslspeech.data.manifest import read_manifest, write_manifest

    entries = list(read_manifest(manifest))
    many = [
        type(e)(f"{e.fileid}_copy{copy}", e.path, e.num_samples)
        for copy in range(4)
        for e in entries
    ]
    write_manifest(many, work / "manifest_4x.csv")
    results = {}
    for label, path in (("1x", manifest), ("4x", work / "manifest_4x.csv")):
        out = work / f"rss_{label}"
        child = [sys.executable, "-c", RSS_CHILD, str(path), str(out), str(threads)]
        run = subprocess.run(child, capture_output=True, text=True, check=True)
        results[label] = int(run.stdout.split()[-1]) / 1024
        files = len(entries) * (4 if label == "4x" else 1)
        emit(f"extract_peak_rss_{label}", round(results[label], 1), "MiB", files=files)
    emit("extract_peak_rss_growth_4x", round(results["4x"] - results["1x"], 1), "MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="existing synthetic corpus folder (default: make one)")
    parser.add_argument("--speakers", type=int, default=18)
    parser.add_argument("--utterances", type=int, default=27, help="per speaker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = corpus(args, work)
        store = mfcc_speed(folder / "manifest.csv", work, args.device)
        kmeans_comparison(store, args.device, args.threads)
        peak_rss(folder / "manifest.csv", work, args.threads)


if __name__ == "__main__":
    main()
