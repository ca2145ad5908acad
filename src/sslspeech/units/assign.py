"""Transcription: every utterance of a feature store -> its k-means units, or every utterance of
an audio manifest -> the codebook units of a SpidR/DinoSR layer (`transcribe_codebooks`).

Output: JSONL `{"fileid": ..., "units": [...]}` in the store's order, or fairseq `.km` lines
(space-separated units, one line per utterance, same order) with `km=True`. Frames are read
and assigned in blocks of about 32 MB (`assigned_units`): a shard's memory does not grow with
the number of its frames.

Sharded like feature extraction: shard i of n covers a contiguous range of the store's (or
manifest's) utterances and is written atomically to `<out>.parts/part-IIIII-of-NNNNN`; complete
parts are skipped on a rerun. When every part exists they are joined into `out` (atomically).
Without `shard`, all parts are made here (or by a process pool / submitit executor) and then
removed; with `shard`, only that part is made, and the join happens once all parts exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import DataError
from sslspeech.features.extract import run_shards, shard_range
from sslspeech.features.stream import utterance_frames, utterance_lengths
from sslspeech.units.kmeans import KMeans
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.progress import progress

log = logging.getLogger(__name__)


def parts_dir(out: str | os.PathLike[str]) -> Path:
    """Folder of the per-shard parts of `out`."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def part_path(out: str | os.PathLike[str], shard: int, num_shards: int) -> Path:
    """One shard's part file."""
    return parts_dir(out) / f"part-{shard:05d}-of-{num_shards:05d}"


def _fingerprint(features: Path, kmeans: KMeans, num_shards: int, km: bool) -> dict[str, Any]:
    digest = hashlib.sha256(kmeans.centroids.numpy().tobytes()).hexdigest()
    return {
        "features": str(features.absolute()),
        "kmeans_sha256": digest,
        "num_shards": num_shards,
        "format": "km" if km else "jsonl",
    }


def _prepare_parts(out: Path, fingerprint: dict[str, Any]) -> None:
    """Make the parts folder; stale parts of another transcription are removed."""
    folder = parts_dir(out)
    meta = folder / "parts.json"
    if meta.is_file() and json.loads(meta.read_text()) != fingerprint:
        log.warning(
            "%s: parts of another transcription (features/k-means changed); removed", folder
        )
        shutil.rmtree(folder)
    if not meta.is_file():
        with atomic_open(meta, "w") as handle:
            json.dump(fingerprint, handle, indent=1)


def assigned_units(
    store: Any,
    keys: Sequence[str],
    model: KMeans,
    device: str | torch.device = "cpu",
    block_rows: int | None = None,
) -> Iterator[np.ndarray]:
    """The units of each utterance of `keys`, in order: their frames are read end to end in
    blocks of `block_rows` (default: about 32 MB of float32, `utterance_frames`) and assigned a
    block at a time, so memory is one block whatever the number of utterances (an utterance
    cut by a block's end is joined from its pieces)."""
    lengths = utterance_lengths(store, keys)
    frames = utterance_frames(store, keys, lengths, block_rows)
    starts = range(0, frames.num_frames, frames.block_rows)
    blocks = (
        model.predict(
            frames.read(start, min(start + frames.block_rows, frames.num_frames)), device
        ).numpy()
        for start in starts
    )
    labels, used = np.empty(0, dtype=np.int64), 0
    for length in lengths.tolist():
        pieces = []
        while length > 0:
            if used == len(labels):
                labels, used = next(blocks), 0
            piece = labels[used : used + length]
            pieces.append(piece)
            used += len(piece)
            length -= len(piece)
        yield pieces[0] if len(pieces) == 1 else np.concatenate(pieces or [labels[:0]])


def _line(fileid: str, units: np.ndarray, km: bool) -> str:
    if km:
        return " ".join(map(str, units.tolist())) + "\n"
    return json.dumps({"fileid": fileid, "units": units.tolist()}) + "\n"


def transcribe_shard(
    features: str | os.PathLike[str],
    kmeans: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shard: int = 0,
    num_shards: int = 1,
    km: bool = False,
    device: str | torch.device = "cpu",
    trust: bool = False,
    quiet: bool = False,
    on_utterance: Callable[[int], None] | None = None,
) -> bool:
    """Write one shard's part unless it exists; True when it was written.

    `on_utterance(i)` is called after each utterance is assigned (tests simulate crashes).
    """
    from sslspeech.features.store import open_store

    target = part_path(out, shard, num_shards)
    if target.is_file():
        return False
    store = open_store(features)
    model = KMeans.load(kmeans, trust=trust)
    fileids = list(store)
    start, end = shard_range(len(fileids), num_shards, shard)
    keys = fileids[start:end]
    with atomic_open(target, "w") as handle:
        units = progress(
            assigned_units(store, keys, model, device),
            total=len(keys),
            desc=f"transcribe {target.name}",
            unit="utt",
            quiet=quiet,
        )
        for index, (fileid, labels) in enumerate(zip(keys, units, strict=True), start=start):
            handle.write(_line(fileid, labels, km))
            if on_utterance is not None:
                on_utterance(index)
    return True


def _join(out: Path, num_shards: int) -> bool:
    """Concatenate the parts into `out` when all exist; True when it did."""
    parts = [part_path(out, i, num_shards) for i in range(num_shards)]
    if not all(p.is_file() for p in parts):
        return False
    with atomic_open(out, "wb") as handle:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, handle)
    return True


def transcribe(
    features: str | os.PathLike[str],
    kmeans: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    km: bool = False,
    shard: int | None = None,
    num_shards: int = 1,
    workers: int = 1,
    executor: Any = None,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    trust: bool = False,
    quiet: bool = False,
) -> Path:
    """Units of every utterance of the feature store `features` with the k-means `kmeans`.

    Writes `out` (JSONL, or `.km` lines with `km=True`); see the module docstring for shards.
    """
    out = Path(out)
    model = KMeans.load(kmeans, trust=trust)
    return run_parts(
        transcribe_shard,
        lambda i: (str(features), str(kmeans), str(out), i, num_shards, km, str(device), trust),
        out,
        _fingerprint(Path(features), model, num_shards, km),
        shard=shard,
        num_shards=num_shards,
        workers=workers,
        executor=executor,
        threads=threads,
        quiet=quiet,
    )


def run_parts(
    job: Callable[..., bool],
    job_args: Callable[[int], tuple[Any, ...]],
    out: Path,
    fingerprint: dict[str, Any],
    *,
    shard: int | None,
    num_shards: int,
    workers: int,
    executor: Any,
    threads: int | None,
    quiet: bool,
) -> Path:
    """Make the missing parts of `out` with `job(*job_args(i), quiet=...)` (here, in a process
    pool or as array jobs), then join them once all exist (see the module docstring)."""
    if num_shards < 1:
        raise DataError(f"num_shards must be >= 1, got {num_shards}")
    _prepare_parts(out, fingerprint)
    todo = [shard] if shard is not None else list(range(num_shards))
    args = [job_args(i) for i in todo if not part_path(out, i, num_shards).is_file()]
    if shard is not None or (workers <= 1 and executor is None):
        for one in args:
            job(*one, quiet=quiet)
    else:
        run_shards(job, args, workers, executor, threads)
    if _join(out, num_shards) and shard is None:
        shutil.rmtree(parts_dir(out))
    return out


def transcribe_codebook_shard(
    manifest: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    layer: int,
    out: str | os.PathLike[str],
    shard: int = 0,
    num_shards: int = 1,
    km: bool = False,
    device: str | torch.device = "cpu",
    batch_samples: int | None = None,
    quiet: bool = False,
) -> bool:
    """Write one shard's part of codebook units (argmax of the layer's posteriorgram) unless
    it exists; True when it was written. The model runs on batches of `batch_samples` padded
    samples (see `stream_codebook_posteriors`)."""
    from sslspeech.data.audio import load_audio
    from sslspeech.data.manifest import read_manifest
    from sslspeech.units.codebooks import load_codebook_model, stream_codebook_posteriors

    target = part_path(out, shard, num_shards)
    if target.is_file():
        return False
    entries = read_manifest(manifest)
    model = load_codebook_model(checkpoint, [layer], device)
    start, end = shard_range(len(entries), num_shards, shard)
    rows = progress(entries[start:end], desc=f"transcribe {target.name}", quiet=quiet)
    audio = ((entry.fileid, load_audio(entry)) for entry in rows)
    with atomic_open(target, "w") as handle:
        for fileid, posteriors in stream_codebook_posteriors(
            model, audio, [layer], batch_samples=batch_samples
        ):
            handle.write(_line(fileid, posteriors[layer].argmax(-1).cpu().numpy(), km))
    return True


def _signature(path: Path) -> list[list[Any]]:
    """[name, size, mtime_ns] of a file, or of each file of a directory (JSON-ready): a
    rewritten checkpoint makes the parts of an interrupted transcription stale."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def transcribe_codebooks(
    manifest: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    layer: int,
    out: str | os.PathLike[str],
    *,
    km: bool = False,
    shard: int | None = None,
    num_shards: int = 1,
    workers: int = 1,
    executor: Any = None,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    batch_samples: int | None = None,
    quiet: bool = False,
) -> Path:
    """Codebook units of layer `layer` (1-based) of a SpidR/DinoSR `checkpoint` for every
    utterance of the audio `manifest`, in manifest order; sharded like `transcribe`. The model
    runs on batches of `batch_samples` padded samples (default: `default_batch_samples`)."""
    from sslspeech.features.batching import check_batch_samples
    from sslspeech.units.codebooks import load_codebook_model

    out = Path(out)
    check_batch_samples(batch_samples)
    load_codebook_model(checkpoint, [layer])  # refuse a wrong checkpoint or layer up front
    fingerprint = {
        "manifest": str(Path(manifest).absolute()),
        "checkpoint": str(Path(checkpoint).absolute()),
        "checkpoint_files": _signature(Path(checkpoint)),
        "layer": layer,
        "num_shards": num_shards,
        "format": "km" if km else "jsonl",
    }
    return run_parts(
        transcribe_codebook_shard,
        lambda i: (
            str(manifest),
            str(checkpoint),
            layer,
            str(out),
            i,
            num_shards,
            km,
            str(device),
            batch_samples,
        ),
        out,
        fingerprint,
        shard=shard,
        num_shards=num_shards,
        workers=workers,
        executor=executor,
        threads=threads,
        quiet=quiet,
    )
