"""Compiled training on CPU (`run.compile`): graph breaks, recompilations and steps/s of the
tiny configs on batches of many padded lengths, eager vs compiled (inductor).

    .venv/bin/python bench/compile.py [--steps 12] [--models hubert dinosr spidr]

Prints one JSON line per model and mode; steps/s is the median over the steps after the first
(which compiles), `compile_s` the time of the steps beyond that median (first compile and
recompilations). `recompiles` counts the frames compiled after the first. HuBERT pads its batches
(tiny_hubert), DinoSR and SpidR crop them to their shortest row (their configs, as their
references): padded and unpadded batches take two graphs (attention with and without a mask), a
batch of one row one more (dynamo never traces a size of 1 as a symbol). On CPU only, inductor
also splits on whether the first conv's outputs (batch x frames, the longest float sum) exceed
4096 (`long_sum_batches`): its precise accumulation above that size. Compiling costs minutes per
model on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.corpus import make_tone_corpus  # noqa: E402

from sslspeech.training.compile import compile_counts, compile_for_training  # noqa: E402
from sslspeech.training.config import load_config  # noqa: E402
from sslspeech.training.distributed import resolve_environment  # noqa: E402
from sslspeech.training.trainer import Trainer  # noqa: E402


def measure(name: str, manifest: Path, workdir: Path, steps: int, compiled: bool) -> None:
    """Run `steps` training steps of tiny_`name` and print its figures."""
    overrides = [
        f"run.workdir={workdir}",
        f"data.manifest={manifest}",
        "data.max_batch_samples=40000",
        "data.min_sample_size=3200",
        "data.max_sample_size=19200",
        "data.num_buckets=8",
        "run.validate_every=0",
        "logging.progress=false",
    ]
    trainer = Trainer(
        load_config(REPO / "configs" / f"tiny_{name}.toml", overrides),
        resolve_environment("cpu", {}),
    )
    torch._dynamo.reset()
    before = compile_counts()
    if compiled:
        compile_for_training(trainer.model)
    batches = trainer.batches()
    _, kernel, stride = trainer.config.model.build().extractor_conv_layers[0]
    times, lengths, samples, padded, padded_batches = [], set(), 0, 0, 0
    single_rows = long_sums = 0
    for _ in range(steps):
        batch = next(batches)
        rows, length = batch["waveforms"].shape
        lengths.add(length)
        padded_batches += batch["padded"]
        single_rows += rows == 1
        long_sums += rows * ((length - kernel) // stride + 1) > 4096
        padded += batch["waveforms"].numel() - int(batch["lengths"].sum())
        samples += batch["waveforms"].numel()
        start = time.perf_counter()
        trainer.train_step([batch])
        trainer.objective.after_step(trainer.model, trainer.state.step)
        times.append(time.perf_counter() - start)
    after = compile_counts()
    median = statistics.median(times[1:])
    print(
        json.dumps(
            {
                "bench": "compile",
                "config": f"tiny_{name}",
                "mode": "inductor" if compiled else "eager",
                "threads": torch.get_num_threads(),
                "steps": steps,
                "distinct_lengths": len(lengths),
                "padded_batches": padded_batches,
                "padded_sample_share": round(padded / samples, 4),
                "single_row_batches": single_rows,
                "long_sum_batches": long_sums,
                "graph_breaks": after["graph_breaks"] - before["graph_breaks"],
                "recompiles": max(0, after["compiled_frames"] - before["compiled_frames"] - 1),
                "inductor_graphs": after["inductor_graphs"] - before["inductor_graphs"],
                "first_step_s": round(times[0], 2),
                "compile_s": round(sum(max(0.0, t - median) for t in times), 1),
                "steps_per_second": round(1 / median, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=["hubert", "dinosr", "spidr"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_tone_corpus(
            folder / "corpus", num_utterances=48, min_frames=15, max_frames=60
        )
        for name in args.models:
            for compiled in (False, True):
                measure(name, manifest, folder / f"{name}_{compiled}", args.steps, compiled)


if __name__ == "__main__":
    main()
