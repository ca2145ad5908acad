"""Training throughput on CPU: steps/s and audio-seconds/s.

- tiny configs (tiny_hubert/spidr/dinosr): the whole loop (data loading included) on a
  synthetic tone corpus, figures from the run's own metrics after a warm-up window;
- base configs (hubert_base_it2, spidr_base, dinosr_base): a few optimizer steps (forward,
  backward, clipping, AdamW, schedule, EMA teacher) on one fixed batch, float32;
- the `spidr` reference's step (spidr.train's loop body) on the same batch shape, when the
  package imports: `--spidr-src DIR` puts DIR on sys.path (an unpacked wheel of
  `pip download spidr==0.2.0 --no-deps --python-version 3.12 --only-binary=:all:`).

    .venv/bin/python bench/train.py [--spidr-src /tmp/spidr_ref/src] [--base-steps 3]

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.corpus import make_tone_corpus  # noqa: E402

from sslspeech.training.config import load_config  # noqa: E402
from sslspeech.training.distributed import resolve_environment  # noqa: E402
from sslspeech.training.metrics import read_metrics  # noqa: E402
from sslspeech.training.trainer import Trainer, train  # noqa: E402

SAMPLE_RATE = 16_000
CONFIGS = REPO / "configs"


def emit(**fields: Any) -> None:
    print(
        json.dumps(
            {"bench": "train", "device": "cpu", "threads": torch.get_num_threads(), **fields}
        ),
        flush=True,
    )


def tiny(name: str, manifest: Path, folder: Path, warmup: int, steps: int) -> None:
    """Whole loop of a tiny config: the metrics window after `warmup` steps."""
    workdir = folder / f"tiny_{name}"
    config = load_config(
        CONFIGS / f"tiny_{name}.toml",
        [
            f"run.workdir={workdir}",
            f"data.manifest={manifest}",
            f"run.max_steps={warmup + steps}",
            f"logging.log_every={steps if warmup == steps else warmup}",
            "run.validate_every=0",
            f"checkpoint.save_every={warmup + steps}",
            "logging.progress=false",
        ],
    )
    train(config)
    last = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "train"][-1]
    emit(
        config=f"tiny_{name}",
        impl="sslspeech",
        loop="full (data + step)",
        steps=steps,
        steps_per_second=round(last["steps_per_second"], 3),
        audio_seconds_per_second=round(last["audio_seconds_per_second"], 2),
    )


def base_batch(trainer: Trainer, seconds: float, batch_size: int) -> dict[str, Any]:
    """One collated batch of `batch_size` x `seconds` of noise, masked by the config's rule."""
    generator = torch.Generator().manual_seed(0)
    items = []
    for index in range(batch_size):
        wav = torch.randn(int(seconds * SAMPLE_RATE), generator=generator)
        labels = torch.randint(0, 100, (int(seconds * 50),), generator=generator)
        items.append(
            {
                "waveform": (wav - wav.mean()) / wav.std(),
                "labels": labels,
                "fileid": f"b{index}",
                "index": index,
                "seed": index,
            }
        )
    return trainer.train_data.collator(items)


Step = Callable[[int], None]


def report(
    name: str, impl: str, times: list[tuple[float, float]], seconds: float, batch_size: int
) -> None:
    """Medians over the measured steps (wall and process CPU time)."""
    step_s = statistics.median(t for t, _ in times)
    cpu_s = statistics.median(c for _, c in times)
    emit(
        config=name,
        impl=impl,
        loop="step (fixed batch)",
        batch=f"{batch_size} x {seconds:g} s",
        steps=len(times),
        seconds_per_step=round(step_s, 3),
        cpu_seconds_per_step=round(cpu_s, 3),
        steps_per_second=round(1 / step_s, 4),
        audio_seconds_per_second=round(batch_size * seconds / step_s, 3),
    )


def timed(step: Step, index: int) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    step(index)
    return time.perf_counter() - start, time.process_time() - start_cpu


def ours_step(
    name: str, manifest: Path, folder: Path, seconds: float, batch_size: int
) -> tuple[Step, dict[str, Any]]:
    """One optimizer step of a base config on a fixed batch (no data loading), and the batch."""
    config = load_config(
        CONFIGS / f"{name}.toml",
        [
            f"run.workdir={folder / name}",
            f"data.manifest={manifest}",
            "optim.dtype=float32",
            "run.compile=false",
            "data.num_workers=0",
            "data.min_sample_size=1000",
            "run.validate_every=0",
            "logging.progress=false",
        ],
    )
    trainer = Trainer(config, resolve_environment("cpu", {}))
    batch = base_batch(trainer, seconds, batch_size)

    def step(index: int) -> None:
        trainer.train_step([batch])
        trainer.objective.after_step(trainer.model, index)

    return step, batch


def reference_step(name: str, batch: dict[str, Any]) -> Step | None:
    """spidr.train's loop body (forward, normalized loss, backward, clip, AdamW, schedule, EMA)
    on the same waveforms and masked frames, or None when `spidr` does not import."""
    try:
        from spidr.config import DinoSRConfig, OptimizerConfig, SpidRConfig
        from spidr.models import DinoSR, SpidR
        from spidr.optimizer import build_optimizer
    except ImportError as error:
        emit(config=name, impl="spidr-0.2.0", skipped=f"reference not importable: {error}")
        return None
    torch.manual_seed(0)
    model = (SpidR(SpidRConfig()) if name.startswith("spidr") else DinoSR(DinoSRConfig())).train()
    optimizer, scaler, scheduler = build_optimizer(model, OptimizerConfig(dtype="float32"))
    counts = batch["mask"].sum(1)
    mask_indices = torch.stack(
        [row.nonzero().squeeze(1)[: int(counts.min())] for row in batch["mask"]]
    )
    waveforms = batch["waveforms"]

    def step(index: int) -> None:
        loss, _ = model(waveforms, mask_indices=mask_indices, attention_mask=None)
        loss = loss.sum() / mask_indices.numel()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        model.update_ema(index)

    return step


def base(
    name: str, manifest: Path, folder: Path, steps: int, seconds: float, batch_size: int
) -> None:
    """Ours and the reference's steps interleaved (same machine load for both); the first step
    of each warms up allocators and AdamW state and is not counted."""
    ours, batch = ours_step(name, manifest, folder, seconds, batch_size)
    reference = reference_step(name, batch) if name != "hubert_base_it2" else None
    times: dict[str, list[tuple[float, float]]] = {"sslspeech": [], "spidr-0.2.0": []}
    for index in range(1, steps + 2):
        for impl, step in (("sslspeech", ours), ("spidr-0.2.0", reference)):
            if step is not None:
                measured = timed(step, index)
                if index > 1:
                    times[impl].append(measured)
    for impl, measured in times.items():
        if measured:
            report(name, impl, measured, seconds, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spidr-src", help="folder holding the reference `spidr` package")
    parser.add_argument("--tiny-steps", type=int, default=20)
    parser.add_argument("--base-steps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="utterance length, base configs")
    parser.add_argument("--batch", type=int, default=2, help="utterances per batch, base configs")
    parser.add_argument("--skip-base", action="store_true")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.spidr_src:
        sys.path.insert(0, args.spidr_src)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_tone_corpus(
            folder / "data", num_utterances=32, min_frames=25, max_frames=60
        )
        for name in ("hubert", "spidr", "dinosr"):
            tiny(name, manifest, folder, args.tiny_steps, args.tiny_steps)
        if args.skip_base:
            return
        for name in ("hubert_base_it2", "spidr_base", "dinosr_base"):
            base(name, manifest, folder, args.base_steps, args.seconds, args.batch)


if __name__ == "__main__":
    main()
