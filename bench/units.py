"""Benchmark of the features/units stack on the synthetic corpus; one JSON line per figure.

- synthetic corpus generation (18 voices, ~20 minutes of speech);
- MFCC extraction speed (audio seconds per second), in-memory and through the sharded store;
- k-means, ours (25 passes, and our default stopping rule) vs faiss.Kmeans (all rows, 25
  iterations, same threads; interleaved runs, medians) and scikit-learn KMeans (25 Lloyd
  iterations), all scored with the same exact inertia: k=100 on the corpus's 39-dim MFCC
  frames, k=500 on 200k 768-dim layer-like frames;
- the 768-dim fit out of core: streamed from a float32 store on disk in a fresh process, its
  time and peak anonymous memory (RssAnon) against the store's size;
- peak RSS of feature extraction for the corpus manifest and for 4x as many files (each in a
  fresh subprocess, its VmHWM), to show memory does not grow with the file count.

Usage: python bench/units.py [--corpus DIR] [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def layer_like(frames: int, dim: int = 768, seed: int = 0) -> np.ndarray:
    """Frames shaped like transformer-layer features: 2000 clusters in a 64-dim subspace,
    anisotropic spreads, plus full-rank noise (float32)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(64, dim)).astype(np.float32) / 8
    centres = rng.normal(size=(2000, 64)).astype(np.float32)
    labels = rng.integers(0, 2000, size=frames)
    spread = rng.uniform(0.2, 0.8, size=(2000, 1)).astype(np.float32)
    low = centres[labels] + spread[labels] * rng.normal(size=(frames, 64)).astype(np.float32)
    noise = 0.05 * rng.normal(size=(frames, dim)).astype(np.float32)
    return np.ascontiguousarray(low @ basis + noise, dtype=np.float32)


def _timed(function: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of all threads, result) of `function()`."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - start, time.process_time() - cpu, result


def kmeans_vs_faiss(name: str, x: np.ndarray, k: int, threads: int, repeats: int) -> float:
    """Ours (k-means++ on a sample, 25 Lloyd passes; and with our default stopping rule) and
    faiss.Kmeans (all rows, 25 iterations), interleaved `repeats` times; medians. Returns
    faiss's median seconds."""
    import faiss

    from sslspeech.units import KMeans

    faiss.omp_set_num_threads(threads)
    frames = torch.from_numpy(x)
    KMeans.fit(frames[:5000], 10, seed=0, max_iter=2)  # warm-up (lazy init, thread pools)
    runs: dict[str, list[tuple[float, float, Any]]] = {"ours": [], "ours_default": [], "faiss": []}
    for repeat in range(repeats):
        fit = functools.partial(KMeans.fit, frames, k, seed=repeat)
        runs["ours"].append(_timed(functools.partial(fit, max_iter=25, tol=0, inertia_tol=0)))
        runs["ours_default"].append(_timed(fit))
        kmeans = faiss.Kmeans(x.shape[1], k, niter=25, seed=repeat, max_points_per_centroid=1 << 30)
        seconds, cpu, _ = _timed(functools.partial(kmeans.train, x))
        runs["faiss"].append((seconds, cpu, KMeans(kmeans.centroids)))
    med = statistics.median
    wall = {label: med(t for t, _, _ in done) for label, done in runs.items()}
    cpu = {label: med(c for _, c, _ in done) for label, done in runs.items()}
    inertia = {label: med(m.inertia(frames) for _, _, m in done) for label, done in runs.items()}
    common = {"frames": len(x), "dim": x.shape[1], "k": k, "threads": threads, "runs": repeats}
    settings = {
        "ours": "k-means++ on max(4096, 8k) rows, 25 passes",
        "ours_default": "k-means++, passes until one gains < 0.1% (KMeans.fit defaults)",
        "faiss": "faiss.Kmeans niter=25, all rows",
    }
    for label, done in runs.items():
        passes = [m.metadata.get("iterations") for _, _, m in done] if label != "faiss" else None
        emit(
            f"kmeans_{name}_{label}_seconds",
            round(wall[label], 2),
            "s",
            cpu_s=round(cpu[label], 2),
            inertia=inertia[label],
            **common,
            runs_s=[round(t, 2) for t, _, _ in done],
            **({"passes": passes} if passes else {}),
            settings=settings[label],
        )
    for label in ("ours", "ours_default"):
        suffix = "" if label == "ours" else "_default"
        emit(
            f"kmeans_{name}{suffix}_speed_vs_faiss",
            round(wall["faiss"] / wall[label], 3),
            "x",
            cpu=round(cpu["faiss"] / cpu[label], 3),
            goal=">= 1",
            note="faiss/ours, medians of interleaved runs (wall; CPU time of all threads)",
        )
        emit(
            f"kmeans_{name}{suffix}_inertia_vs_faiss",
            round(inertia[label] / inertia["faiss"], 5),
            "ours/faiss",
            goal="<= 1",
        )
    return wall["faiss"]


def kmeans_vs_sklearn(name: str, x: np.ndarray, k: int, threads: int) -> None:
    """scikit-learn KMeans (Lloyd, 25 iterations, tol 0), one run, scored like ours."""
    try:
        from sklearn.cluster import KMeans as SKMeans
        from threadpoolctl import threadpool_limits
    except ImportError:
        emit(f"kmeans_{name}_sklearn_seconds", float("nan"), "s", note="scikit-learn not installed")
        return
    from sslspeech.units import KMeans

    init = "k-means++" if x.shape[1] < 100 else "random"  # its k-means++ uses every row
    with threadpool_limits(threads):
        seconds, _, fitted = _timed(
            lambda: SKMeans(k, init=init, n_init=1, max_iter=25, tol=0.0, random_state=0).fit(x)
        )
    emit(
        f"kmeans_{name}_sklearn_seconds",
        round(seconds, 2),
        "s",
        frames=len(x),
        k=k,
        inertia=KMeans(fitted.cluster_centers_).inertia(torch.from_numpy(x)),
        threads=threads,
        settings=f"sklearn KMeans lloyd, init={init}, n_init=1, max_iter=25, tol=0",
    )


OOC_CHILD = """
import json, sys, threading, time, torch
torch.set_num_threads(int(sys.argv[3]))
from sslspeech.features import open_store
from sslspeech.units import fit_store

def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

baseline = anon_kib()
peak = [baseline]
done = threading.Event()
def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], anon_kib())
threading.Thread(target=sample, daemon=True).start()
start, cpu = time.perf_counter(), time.process_time()
model = fit_store(open_store(sys.argv[1]), int(sys.argv[4]), fraction=1.0, seed=0,
                  max_iter=int(sys.argv[5]), tol=0, inertia_tol=0)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
done.set()
model.save(sys.argv[2])
record = {"seconds": seconds, "cpu_s": cpu, "baseline_kib": baseline}
print(json.dumps({**record, "peak_kib": max(peak[0], anon_kib())}))
"""


def _layer_store(x: np.ndarray, directory: Path, copies: int = 1) -> int:
    """`x` (tiled `copies` times) as a 2-shard float32 store of 500-frame utterances; its bytes."""
    from sslspeech.features import StoreWriter
    from sslspeech.features.store import write_store_meta

    write_store_meta(directory, {"num_shards": 2})
    for shard in range(2):
        with StoreWriter(directory, shard, 2) as writer:
            for copy in range(copies):
                part = np.array_split(np.arange(len(x)), 2)[shard]
                for i, rows in enumerate(np.array_split(part, len(part) // 500)):
                    writer.add(f"c{copy}s{shard}u{i}", x[rows])
    return sum(p.stat().st_size for p in directory.glob("*.npy"))


def _fit_out_of_core(store: Path, out: Path, threads: int, k: int, passes: int) -> dict:
    child = [sys.executable, "-c", OOC_CHILD, str(store), str(out), str(threads), str(k)]
    run = subprocess.run([*child, str(passes)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def kmeans_out_of_core(x: np.ndarray, k: int, work: Path, threads: int, faiss_s: float) -> None:
    """The same fit streamed from a float32 store on disk, in a fresh process: time and peak
    anonymous memory (RssAnon sampled every 5 ms; the mmapped pages are file-backed); then
    the memory of 3 passes over a store 3x as large (the same frames tiled)."""
    from sslspeech.units import KMeans

    size = _layer_store(x, work / "layer_store")
    out = work / "ooc.safetensors"
    result = _fit_out_of_core(work / "layer_store", out, threads, k, 25)
    used = (result["peak_kib"] - result["baseline_kib"]) / 1024
    inertia = KMeans.load(out).inertia(torch.from_numpy(x))
    emit(
        "kmeans_out_of_core_seconds",
        round(result["seconds"], 2),
        "s",
        cpu_s=round(result["cpu_s"], 2),
        frames=len(x),
        dim=x.shape[1],
        k=k,
        threads=threads,
        inertia=inertia,
        vs_faiss_in_memory=round(result["seconds"] / faiss_s, 3),
        goal="<= 2 x faiss",
    )
    emit(
        "kmeans_out_of_core_peak_anon",
        round(result["peak_kib"] / 1024, 1),
        "MiB",
        above_baseline_mib=round(used, 1),
        baseline_mib=round(result["baseline_kib"] / 1024, 1),
        store_mib=round(size / 2**20, 1),
        store_over_memory_used=round(size / 2**20 / used, 1),
        store_over_peak_anon=round(size / 1024 / result["peak_kib"], 1),
        note="baseline: RssAnon after importing torch and sslspeech, before fit_store",
    )
    shutil.rmtree(work / "layer_store")
    size = _layer_store(x, work / "layer_store_3x", copies=3)
    tiled = _fit_out_of_core(work / "layer_store_3x", out, threads, k, 3)
    emit(
        "kmeans_out_of_core_3x_peak_anon",
        round(tiled["peak_kib"] / 1024, 1),
        "MiB",
        above_baseline_mib=round((tiled["peak_kib"] - tiled["baseline_kib"]) / 1024, 1),
        store_mib=round(size / 2**20, 1),
        frames=3 * len(x),
        passes=3,
        note="memory does not grow with the store",
    )
    shutil.rmtree(work / "layer_store_3x")


# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at the RSS its parent had at fork
# (the high-water mark of the pre-exec address space is kept), i.e. the bench's own frames.
RSS_CHILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from sslspeech.features.extract import extract_features
extract_features(sys.argv[1], sys.argv[2], quiet=True)
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved k-means runs")
    parser.add_argument("--layer-frames", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = corpus(args, work)
        from sslspeech.features import open_store

        store = mfcc_speed(folder / "manifest.csv", work, args.device)
        mfcc = open_store(store)
        frames = np.concatenate([np.asarray(mfcc[key]) for key in mfcc])
        kmeans_vs_faiss("mfcc", frames, 100, args.threads, args.repeats)
        kmeans_vs_sklearn("mfcc", frames, 100, args.threads)
        layer = layer_like(args.layer_frames)
        faiss_s = kmeans_vs_faiss("layer", layer, 500, args.threads, args.repeats)
        kmeans_vs_sklearn("layer", layer, 500, args.threads)
        kmeans_out_of_core(layer, 500, work, args.threads, faiss_s)
        peak_rss(folder / "manifest.csv", work, args.threads)


if __name__ == "__main__":
    main()
