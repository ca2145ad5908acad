"""SpidR-base training step (forward + backward) on 2 x 4 s of audio, CPU: sslspeech vs the
`spidr` reference package (v0.2.0) when it can be imported, with the same weights and mask.

    .venv/bin/python bench/spidr_step.py [--spidr-src DIR] [--repeats 5]

`--spidr-src` is a folder holding the reference's `spidr/` package (e.g. an unpacked wheel from
`pip download spidr==0.2.0 --no-deps`); it is only put on sys.path here. Prints one JSON line
per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sslspeech.data.masking import compute_mask, mask_to_indices
from sslspeech.interop.spidr import native_state_from_spidr
from sslspeech.models import spidr as spidr_models
from sslspeech.models.spidr import SpidR

BATCH, SECONDS, SAMPLE_RATE = 2, 4.0, 16000


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "spidr_step", **fields}), flush=True)


def reference_model() -> nn.Module | None:
    """The reference SpidR base in train mode, or None when `spidr` cannot be imported."""
    try:
        from spidr.config import SpidRConfig
        from spidr.models import SpidR as ReferenceSpidR
    except ImportError as error:
        emit(impl="spidr", skipped=f"reference not importable: {error}")
        return None
    return ReferenceSpidR(SpidRConfig()).train()


def step_time(step: Callable[[], torch.Tensor], model: nn.Module) -> tuple[float, float]:
    """Wall and process CPU seconds for one forward + backward (CPU time is the steadier figure
    on a shared machine)."""
    model.zero_grad(set_to_none=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    loss = step()
    loss.mean().backward()
    return time.perf_counter() - start, time.process_time() - start_cpu


Step = Callable[[], torch.Tensor]


def measure(runs: dict[str, tuple[Step, nn.Module]], warmup: int, repeats: int) -> dict[str, Any]:
    """Wall and CPU seconds per implementation, runs interleaved in alternating order (the
    same machine load for both)."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    for repeat in range(warmup + repeats):
        order = list(runs.items())
        if repeat % 2:
            order.reverse()
        for name, (step, model) in order:
            wall, cpu = step_time(step, model)
            if repeat >= warmup:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spidr-src", help="folder holding the reference `spidr` package")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.spidr_src:
        sys.path.insert(0, args.spidr_src)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = SpidR(spidr_models.base()).train()
    reference = reference_model()
    if reference is not None:  # same weights in both
        state = native_state_from_spidr(dict(reference.state_dict()), "reference")
        ours.load_state_dict(state)

    generator = torch.Generator().manual_seed(0)
    waveforms = torch.randn(BATCH, int(SECONDS * SAMPLE_RATE), generator=generator)
    waveforms = torch.nn.functional.layer_norm(waveforms, waveforms.shape[1:])
    frames = int(ours.frame_lengths(torch.tensor([waveforms.shape[1]]))[0])
    mask = compute_mask((BATCH, frames), 0.8, 10, min_masks=2, generator=generator)
    indices = mask_to_indices(mask)

    def ours_step() -> torch.Tensor:
        return ours(waveforms, mask=mask)[0]

    def reference_step() -> torch.Tensor:
        assert reference is not None
        return reference(waveforms, mask_indices=indices)[0]

    runs: dict[str, tuple[Step, nn.Module]] = {"sslspeech": (ours_step, ours)}
    if reference is not None:
        runs["spidr"] = (reference_step, reference)
    times = measure(runs, args.warmup, args.repeats)
    for name, table in times.items():
        emit(
            impl=name,
            task=f"SpidR-base forward+backward, {BATCH} x {SECONDS:g} s, CPU float32",
            median_s=round(statistics.median(table["wall"]), 4),
            min_s=round(min(table["wall"]), 4),
            median_cpu_s=round(statistics.median(table["cpu"]), 4),
            min_cpu_s=round(min(table["cpu"]), 4),
            repeats=args.repeats,
            threads=torch.get_num_threads(),
        )
    if reference is not None:
        for label in ("wall", "cpu"):
            ratio = statistics.median(times["spidr"][label]) / statistics.median(
                times["sslspeech"][label]
            )
            emit(
                metric=f"speedup_vs_spidr_{label} (median reference / median ours)",
                value=round(ratio, 3),
            )
        ours.eval()
        reference.eval()
        with torch.no_grad():
            diff = (ours_step() - reference_step()).abs().max().item()
        emit(metric="eval loss max abs diff vs spidr", value=diff)


if __name__ == "__main__":
    main()
