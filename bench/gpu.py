"""The GPU check: SpidR-base and HuBERT-base through the real training loop (data loading,
compiled step, bf16 autocast, AdamW, EMA teacher) for a few steps on one device.

Per config it prints the step time, audio-seconds/s per GPU, TFLOP/s and MFU (the loop's own
FLOP count and the GPU's peak), peak memory, torch.compile's frames / graphs / graph breaks,
and the SDPA kernels the profiled step ran (whether Flash attention was taken). With
`--spidr-src DIR` (a folder holding the reference `spidr` package) the reference SpidR-base
forward + backward runs on the same device, dtype and batch shape, next to ours.

    python bench/gpu.py [--steps 20] [--configs spidr_base hubert_base_it2] [--spidr-src DIR]
    python bench/gpu.py --tiny --steps 2 --no-compile     # CPU smoke run (what the test runs)

The first `--steps` steps are the warm-up (compilation); the figures are those of the next
`--steps` steps. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.corpus import make_tone_corpus  # noqa: E402

from sslspeech.training.config import load_config  # noqa: E402
from sslspeech.training.metrics import read_metrics  # noqa: E402
from sslspeech.training.trainer import train  # noqa: E402

CONFIGS = REPO / "configs"
SAMPLE_RATE = 16_000


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "gpu", **fields}), flush=True)


def sdpa_kernels(trace: Path) -> list[str]:
    """Names of the attention ops and kernels in a profiler trace (Flash shows as `flash`)."""
    events = json.loads(trace.read_text())["traceEvents"]
    names = {str(event.get("name", "")) for event in events}
    return sorted(n for n in names if "scaled_dot_product" in n or "flash" in n.lower())


def run_config(name: str, manifest: Path, folder: Path, args: argparse.Namespace) -> None:
    """`args.steps` warm-up steps, then `args.steps` measured ones, of config `name`."""
    workdir = folder / name
    steps = args.steps
    overrides = [
        f"run.workdir={workdir}",
        f"data.manifest={manifest}",
        f"run.max_steps={2 * steps}",
        f"logging.log_every={steps}",
        "run.validate_every=0",
        f"checkpoint.save_every={2 * steps}",
        "logging.progress=false",
        f"run.compile={str(args.compile).lower()}",
        f"run.profile_steps=[{max(0, steps - 2)}, {steps - 1}]",
        f"data.num_workers={args.workers}",
        *([f"optim.dtype={args.dtype}"] if args.dtype else []),
        *args.override,
    ]
    config = load_config(CONFIGS / f"{name}.toml", overrides)
    from torch._dynamo.utils import counters

    counters.clear()
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    last = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "train"][-1]
    traces = sorted((workdir / "profile").glob("rank0_*.json"))
    kernels = sdpa_kernels(traces[0]) if traces else []
    emit(
        config=name,
        device=device_name(),
        dtype=config.optim.dtype,
        compile=config.run.compile,
        steps_measured=steps,
        step_time_s=round(1 / last["steps_per_second"], 4),
        audio_seconds_per_second_per_gpu=round(last["audio_seconds_per_second"], 1),
        tflops_per_gpu=float(f"{last['tflops_per_gpu']:.4g}") if "tflops_per_gpu" in last else None,
        mfu=float(f"{last['mfu']:.4g}") if "mfu" in last else None,
        peak_memory_gb=round(last["memory_gb"], 2),
        compiled_frames=counters["frames"]["ok"],
        unique_graphs=counters["stats"]["unique_graphs"],
        graph_breaks=sum(counters["graph_break"].values()),
        sdpa_kernels=kernels,
        flash_attention=any("flash" in k.lower() for k in kernels),
        wall_s_including_compile=round(wall, 1),
    )


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def reference_spidr(args: argparse.Namespace) -> None:
    """The reference SpidR-base forward + backward against ours on one fixed batch of the
    spidr_base config's shape, same device and autocast dtype, interleaved."""
    sys.path.insert(0, args.spidr_src)
    try:
        from spidr.config import SpidRConfig
        from spidr.models import SpidR as ReferenceSpidR
    except ImportError as error:
        emit(impl="spidr", skipped=f"reference not importable: {error}")
        return
    from sslspeech.data.masking import compute_mask, mask_to_indices
    from sslspeech.interop.spidr import native_state_from_spidr
    from sslspeech.models import spidr as spidr_models
    from sslspeech.models.spidr import SpidR

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or "bfloat16")
    reference = ReferenceSpidR(SpidRConfig()).to(device).train()
    ours = SpidR(spidr_models.base()).to(device).train()
    ours.load_state_dict(native_state_from_spidr(dict(reference.state_dict()), "reference"))
    config = load_config(CONFIGS / "spidr_base.toml", ["run.workdir=unused", "data.manifest=x"])
    length = config.data.max_sample_size
    batch = max(1, config.data.max_batch_samples // length)
    generator = torch.Generator().manual_seed(0)
    waveforms = torch.randn(batch, length, generator=generator)
    frames = int(ours.frame_lengths(torch.tensor([length]))[0])
    mask = compute_mask((batch, frames), 0.8, 10, min_masks=2, generator=generator)
    indices = mask_to_indices(mask).to(device)
    waveforms, mask = waveforms.to(device), mask.to(device)
    steps = {
        "sslspeech": (ours, lambda: ours(waveforms, mask=mask)[0]),
        "spidr": (reference, lambda: reference(waveforms, mask_indices=indices)[0]),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(2 + args.steps):
        for name, (model, step) in steps.items() if repeat % 2 else reversed(steps.items()):
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype):
                loss = step()
            loss.float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        emit(
            impl=name,
            task=f"SpidR-base forward+backward, {batch} x {length / SAMPLE_RATE:g} s, eager",
            device=device_name(),
            dtype=str(dtype).removeprefix("torch."),
            median_s=round(statistics.median(values), 4),
            audio_seconds_per_second=round(
                batch * length / SAMPLE_RATE / statistics.median(values)
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", help="config names in configs/ (default: base)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a CPU smoke run)")
    parser.add_argument("--steps", type=int, default=20, help="warm-up steps = measured steps")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--utterances", type=int, default=128, help="synthetic corpus size")
    parser.add_argument("--spidr-src", help="folder holding the reference `spidr` package")
    parser.add_argument("--override", nargs="*", default=[], help="extra key=value overrides")
    args = parser.parse_args()
    names = args.configs or (
        ["tiny_spidr", "tiny_hubert"] if args.tiny else ["spidr_base", "hubert_base_it2"]
    )
    if args.dtype is None and not args.tiny:
        args.dtype = "bfloat16"
    frames = (20, 40) if args.tiny else (200, 780)  # 0.4-0.8 s or 4-15.6 s at 50 Hz
    with tempfile.TemporaryDirectory() as folder:
        manifest = make_tone_corpus(
            Path(folder) / "corpus", args.utterances, min_frames=frames[0], max_frames=frames[1]
        )
        for name in names:
            run_config(name, manifest, Path(folder), args)
    if args.spidr_src:
        reference_spidr(args)


if __name__ == "__main__":
    main()
