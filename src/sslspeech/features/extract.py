"""Features of every utterance of a manifest into the sharded store (`features/store.py`).

The manifest is cut into `num_shards` contiguous ranges (fairseq's rounding). Each shard is one
job: it streams its utterances into a `StoreWriter` (memory flat in the number of files) and
becomes visible atomically, so a rerun skips complete shards and redoes the rest, neither
duplicating nor losing utterances. Shards run in this process, in a local process pool, or as a
SLURM job array through any submitit executor.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import ConfigError, SSLSpeechError
from sslspeech.features.batching import (
    WINDOW_BATCHES,
    batched_layers,
    check_batch_samples,
    default_batch_samples,
    windows,
)
from sslspeech.features.store import (
    DTYPES,
    StoreWriter,
    shard_complete,
    shard_name,
    write_store_meta,
)
from sslspeech.utils.progress import progress

log = logging.getLogger(__name__)

MFCC_FRAME_RATE = 100.0
KINDS = ("mfcc", "model")


@dataclass(frozen=True)
class FeatureSpec:
    """What to extract: Kaldi MFCC (39 dims, 100 Hz) or one layer of a checkpoint."""

    kind: str = "mfcc"
    checkpoint: str | None = None
    layer: int | None = None
    """1-based transformer layer (model features)."""
    before_residual: bool = True
    """Feed-forward output before the residual add (True) or the full layer output (False)."""
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "model" and (self.checkpoint is None or self.layer is None):
            raise ConfigError(
                "model features need a checkpoint and a layer (--checkpoint, --layer)"
            )
        if self.kind == "model" and self.layer is not None and self.layer < 1:
            raise ConfigError(f"layer is 1-based; got {self.layer}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def shard_range(total: int, num_shards: int, shard: int) -> tuple[int, int]:
    """[start, end) of the manifest rows of one shard (fairseq's `get_shard_range` rounding)."""
    return round(total / num_shards * shard), round(total / num_shards * (shard + 1))


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n), 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return index, count


class Featurizer:
    """Callable mono 16 kHz waveform (N,) -> (T, D) float32 features; `batch` for many."""

    def __init__(
        self,
        spec: FeatureSpec,
        device: str | torch.device = "cpu",
        batch_samples: int | None = None,
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.batch_samples = batch_samples
        self.model: Any = None
        self.normalize = False
        if spec.kind == "model":
            from sslspeech.models import load_model
            from sslspeech.models.cpu_inference import optimize_for_cpu_inference

            assert spec.checkpoint is not None and spec.layer is not None
            model = load_model(spec.checkpoint).to(self.device).eval()
            self.model = optimize_for_cpu_inference(model)
            if spec.layer > self.model.num_layers:
                raise ConfigError(
                    f"{spec.checkpoint} has {self.model.num_layers} layers; layer {spec.layer} "
                    "does not exist (layers are 1-based)"
                )
            self.normalize = bool(self.model.config.normalize_input)

    @property
    def frame_rate(self) -> float:
        """Frames per second of the output."""
        if self.model is None:
            return MFCC_FRAME_RATE
        stride = math.prod(s for _, _, s in self.model.config.extractor_conv_layers)
        return 16000 / stride

    def describe(self) -> dict[str, Any]:
        """What the store's `store.json` records beyond the spec (needs the model loaded)."""
        info: dict[str, Any] = {"frame_rate": self.frame_rate}
        if self.model is not None:
            info.update(model_type=self.model.model_type, normalize_input=self.normalize)
        return info

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        return self.batch([wav])[0]

    @torch.inference_mode()
    def batch(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The (T, D) float32 features of each waveform: MFCC one by one, model layers in
        length-sorted batches of at most `batch_samples` padded samples."""
        tensors = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) for w in wavs]
        if self.model is None:
            from sslspeech.features.mfcc import mfcc

            return [mfcc(x.to(self.device)).cpu().numpy() for x in tensors]
        if self.normalize:
            from sslspeech.data.audio import standardize

            tensors = [standardize(x) for x in tensors]
        results: list[np.ndarray] = [np.empty(0)] * len(tensors)
        for index, (features,) in batched_layers(
            self.model,
            tensors,
            [int(self.spec.layer or 0)],
            before_residual=self.spec.before_residual,
            batch_samples=self.batch_samples,
            device=self.device,
        ):
            results[index] = features.float().cpu().numpy()
        return results


def _entries(manifest: str | os.PathLike[str]) -> Sequence[Any]:
    from sslspeech.data.manifest import read_manifest, require_entries

    return require_entries(read_manifest(manifest))


def store_meta(
    manifest: str | os.PathLike[str], num_files: int, spec: FeatureSpec, num_shards: int
) -> dict[str, Any]:
    """The `store.json` content of one extraction (without what needs the model loaded)."""
    meta: dict[str, Any] = {
        "num_shards": num_shards,
        "num_files": num_files,
        "manifest": str(Path(manifest).absolute()),
        "kind": spec.kind,
        "dtype": spec.dtype,
    }
    if spec.kind == "model":
        meta.update(
            checkpoint=str(Path(str(spec.checkpoint)).absolute()),
            layer=spec.layer,
            before_residual=spec.before_residual,
        )
    return meta


def extract_shard(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spec: FeatureSpec,
    shard: int = 0,
    num_shards: int = 1,
    device: str | torch.device = "cpu",
    batch_samples: int | None = None,
    quiet: bool = False,
    on_utterance: Callable[[int], None] | None = None,
) -> bool:
    """Write shard `shard` of `num_shards` unless it is complete; True when it was written.

    Utterances are written in manifest order, computed in windows of `WINDOW_BATCHES` batches
    of `batch_samples` (see `batched_layers`). `on_utterance(i)` is called after each utterance
    is written (tests use it to simulate a crash).
    """
    from sslspeech.data.audio import load_audio

    out = Path(out_dir)
    entries = _entries(manifest)
    meta = store_meta(manifest, len(entries), spec, num_shards)
    write_store_meta(out, meta, check_only=True)
    if shard_complete(out, shard, num_shards):
        log.info("%s: %s complete, skipped", out, shard_name(shard, num_shards))
        return False
    for stale in out.glob(f".{shard_name(shard, num_shards)}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a killed writer of this shard
    featurizer = Featurizer(spec, device, batch_samples)
    write_store_meta(out, {**meta, **featurizer.describe()})
    start, end = shard_range(len(entries), num_shards, shard)
    rows = progress(
        range(start, end),
        total=end - start,
        desc=f"features {shard_name(shard, num_shards)}",
        quiet=quiet,
    )
    budget = default_batch_samples(device) if batch_samples is None else batch_samples
    window = WINDOW_BATCHES * budget
    with StoreWriter(out, shard, num_shards, dtype=spec.dtype) as writer:
        for indices in windows(rows, lambda row: int(entries[row].num_samples), window):
            arrays = featurizer.batch([load_audio(entries[i]) for i in indices])
            for i, features in zip(indices, arrays, strict=True):
                writer.add(entries[i].fileid, features)
                if on_utterance is not None:
                    on_utterance(i)
    return True


def run_shards(
    job: Callable[..., Any],
    shard_args: list[tuple[Any, ...]],
    workers: int = 1,
    executor: Any = None,
    threads: int | None = None,
) -> list[Any]:
    """Run `job(*args)` for every shard: in this process, in spawn processes of their own
    (`workers` at a time), or as a submitit executor's job array (anything with `map_array`).

    Processes and array jobs set their torch threads to `threads` (local default: cores /
    workers): many processes each spinning up all cores' threads slow each other down. Shards
    are independent: one that raises or dies (killed, out of memory) does not stop the others;
    once all have ended, `ShardsFailedError` names the failed ones.
    """
    if not shard_args:
        return []
    call = functools.partial(_with_threads, job, threads)
    if executor is not None:
        jobs = executor.map_array(call, shard_args)
        return _gather([job.result for job in jobs])
    if workers <= 1 or len(shard_args) == 1:
        return _gather([functools.partial(job, *args) for args in shard_args])
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    call = functools.partial(_with_threads, job, threads)
    with ThreadPoolExecutor(min(workers, len(shard_args))) as pool:
        futures = [pool.submit(_in_own_process, call, args) for args in shard_args]
        return _gather([future.result for future in futures])


class ShardsFailedError(SSLSpeechError):
    """Some shards of a job failed; the complete ones are kept, so a rerun redoes the rest."""


def _gather(results: list[Callable[[], Any]]) -> list[Any]:
    """Every result, waiting for all of them; then ShardsFailedError if any raised."""
    values, failures = [], []
    for index, result in enumerate(results):
        try:
            values.append(result())
        except Exception as error:  # reported below, once the other shards have ended
            log.error("shard job %d of %d failed: %r", index, len(results), error)
            failures.append((index, error))
    if failures:
        first, cause = failures[0]
        raise ShardsFailedError(
            f"{len(failures)} of {len(results)} shard jobs failed (jobs "
            f"{', '.join(str(i) for i, _ in failures)}; job {first}: {cause!r}); complete "
            "shards are kept: rerun to redo only the failed ones"
        ) from cause
    return values


def _in_own_process(call: Callable[[tuple[Any, ...]], Any], args: tuple[Any, ...]) -> Any:
    """`call(args)` in a spawn process of its own: its death breaks no other shard's pool."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(call, args).result()


def _with_threads(job: Callable[..., Any], threads: int | None, args: tuple[Any, ...]) -> Any:
    """Run one shard in a process of its own (local process or array job)."""
    if threads:
        torch.set_num_threads(threads)
    return job(*args)


def extract_features(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    kind: str = "mfcc",
    checkpoint: str | os.PathLike[str] | None = None,
    layer: int | None = None,
    *,
    before_residual: bool = True,
    dtype: str = "float32",
    shard: int | None = None,
    num_shards: int = 1,
    workers: int = 1,
    executor: Any = None,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    batch_samples: int | None = None,
    quiet: bool = False,
) -> Path:
    """Extract features of every utterance of `manifest` into the store `out_dir`.

    `shard` given: only that shard of `num_shards` (one job of an array). Otherwise every
    incomplete shard, with `workers` local processes or a submitit `executor` (whose jobs use
    `threads` torch threads each). Model layers run in batches of `batch_samples` padded
    samples (default: `default_batch_samples(device)`).
    """
    spec = FeatureSpec(
        kind=kind,
        checkpoint=None if checkpoint is None else str(checkpoint),
        layer=layer,
        before_residual=before_residual,
        dtype=dtype,
    )
    out = Path(out_dir)
    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
    check_batch_samples(batch_samples)
    write_store_meta(out, store_meta(manifest, len(_entries(manifest)), spec, num_shards), True)
    todo = [shard] if shard is not None else list(range(num_shards))
    todo = [i for i in todo if not shard_complete(out, i, num_shards)]
    device_name = str(device)
    args = [
        (str(manifest), str(out), spec, i, num_shards, device_name, batch_samples) for i in todo
    ]
    if shard is not None or (workers <= 1 and executor is None):
        for one in args:
            extract_shard(*one, quiet=quiet)
    else:
        run_shards(extract_shard, args, workers, executor, threads)
    return out
