"""Scale rehearsal: a corpus of many short utterances through manifest -> check -> MFCC -> k-means
-> transcribe -> merge, every stage a public `sslspeech` command with 2 shards/processes, at the
full size and at a quarter of it. One JSON line per stage and size (wall time, throughput, peak
memory of the stage's process tree), then the full/quarter ratios: time should grow 4x (linear),
memory stay flat. The machine's load changes from stage to stage and every stage pays a
fixed start-up (the `startup` line: `python -m sslspeech --version`), so the ratios are also
given with each size's start-up taken off (`time_ratio_after_startup`).

The corpus: short snippets cut from a small synthetic corpus (espeak-ng), hard-linked under
distinct names (so the files cost no disk), in folders of 1000.
Memory: sampled every 50 ms over the stage's processes: the sum of their anonymous memory
(RssAnon: what grows with data held in memory) and the largest single VmHWM (which also counts
file pages the process mapped, e.g. the memory-mapped feature store).

Usage: python bench/scale.py [--utterances 20000] [--seconds 1.0] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def emit(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def snippets(work: Path, count: int, seconds: float) -> list[Path]:
    """`count` distinct short wav files cut from a small synthetic corpus."""
    import soundfile

    from sslspeech.synth import make_corpus

    corpus = make_corpus(work / "synth", speakers=4, utterances=6, seed=0)
    sources = sorted((corpus / "wav").glob("*.wav"))
    length = int(seconds * 16000)
    out = work / "snippets"
    out.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        audio, rate = soundfile.read(sources[i % len(sources)], dtype="int16")
        start = (i // len(sources)) * length // 4 % max(1, len(audio) - length)
        path = out / f"s{i:04d}.wav"
        soundfile.write(path, audio[start : start + length], rate, subtype="PCM_16")
        paths.append(path)
    return paths


def tiled_corpus(work: Path, sources: list[Path], utterances: int) -> Path:
    """`utterances` hard links to the snippets, in folders of 1000 files."""
    root = work / f"corpus_{utterances}"
    for i in range(utterances):
        target = root / f"spk{i // 1000:03d}" / f"utt{i:06d}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(sources[i % len(sources)], target)
    return root


def _status(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def run_stage(command: list[str]) -> dict[str, float]:
    """Run one `sslspeech` command; its wall time and the peak memory of its process tree."""
    peak = {"anon_kib": 0, "hwm_kib": 0}
    process = subprocess.Popen([sys.executable, "-m", "sslspeech", *command])
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            statuses = [_status(pid) for pid in _tree(process.pid)]
            peak["anon_kib"] = max(peak["anon_kib"], sum(s.get("RssAnon", 0) for s in statuses))
            peak["hwm_kib"] = max([peak["hwm_kib"], *(s.get("VmHWM", 0) for s in statuses)])

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"stage failed with exit {code}: sslspeech {' '.join(command)}")
    return {
        "seconds": round(seconds, 2),
        "peak_anon_mib": round(peak["anon_kib"] / 1024, 1),
        "peak_process_hwm_mib": round(peak["hwm_kib"] / 1024, 1),
    }


def rehearse(
    corpus: Path, work: Path, utterances: int, audio_seconds: float, k: int
) -> dict[str, dict]:
    """Every stage on one corpus; the per-stage records."""
    manifest, store = work / "manifest.csv", work / "mfcc"
    km, units, labels = work / "km.safetensors", work / "units.jsonl", work / "labels.csv"
    stages = {
        "manifest": ["manifest", str(corpus), str(manifest), "--workers", "2", "--quiet"],
        "check": ["check", str(manifest), "--workers", "2", "--quiet"],
        "mfcc": ["features", str(manifest), str(store), "--num-shards", "2", "--workers", "2"],
        "kmeans": ["kmeans", str(store), str(km), "--k", str(k), "--fraction", "1"],
        "transcribe": ["transcribe", str(store), str(km), str(units), "--num-shards", "2"],
        "merge": ["units", "merge", str(manifest), str(units), str(labels), "--from-mfcc"],
    }
    stages["mfcc"].append("--quiet")
    stages["kmeans"] += ["--nproc", "2", "--max-iter", "10"]
    stages["transcribe"] += ["--workers", "2", "--quiet"]
    records = {"startup": run_stage(["--version"])}  # python + torch import, in every stage
    for name, command in stages.items():
        records[name] = run_stage(command)
        records[name]["audio_s_per_s"] = round(audio_seconds / records[name]["seconds"], 1)
        records[name]["utterances_per_s"] = round(utterances / records[name]["seconds"], 1)
    from sslspeech.utils.safetensors import load_metadata

    meta = load_metadata(km)
    records["kmeans"]["passes"] = int(meta["iterations"])
    records["kmeans"]["frames"] = int(meta["num_points"])
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each utterance")
    parser.add_argument("--snippets", type=int, default=240, help="distinct audio snippets")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        sources = snippets(work, args.snippets, args.seconds)
        results = {}
        for size in (args.utterances // 4, args.utterances):
            corpus = tiled_corpus(work, sources, size)
            folder = work / f"run_{size}"
            folder.mkdir()
            records = rehearse(corpus, folder, size, size * args.seconds, args.k)
            for stage, record in records.items():
                emit({"name": f"scale_{stage}", "utterances": size, **record})
            results[size] = records
        quarter, full = results[args.utterances // 4], results[args.utterances]
        for stage in full:
            work_full = full[stage]["seconds"] - full["startup"]["seconds"]
            work_quarter = quarter[stage]["seconds"] - quarter["startup"]["seconds"]
            emit(
                {
                    "name": f"scale_{stage}_ratio",
                    "utterances": [args.utterances // 4, args.utterances],
                    "time_ratio": round(full[stage]["seconds"] / quarter[stage]["seconds"], 2),
                    "time_ratio_after_startup": round(work_full / max(work_quarter, 1e-3), 2),
                    "anon_memory_ratio": round(
                        full[stage]["peak_anon_mib"] / quarter[stage]["peak_anon_mib"], 2
                    ),
                    "goal": "time ~4 (linear), memory ~1 (flat)",
                }
            )


if __name__ == "__main__":
    main()
