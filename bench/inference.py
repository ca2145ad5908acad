"""HuBERT-base inference on CPU: sslspeech vs transformers HubertModel, same random weights.

Prints one JSON line per figure: median seconds per forward of a 10 s utterance for each
implementation, the speed-up, and the max |difference| of their outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import torch


def median_times(
    fns: list[Callable[[], object]], repeats: int, warmup: int
) -> list[tuple[float, float]]:
    """(median wall s, median CPU s) of each function, runs interleaved so that load changes
    on a shared machine hit all alike; CPU time (all threads) is the steadier figure there."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            bucket.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [
        (statistics.median(w for w, _ in bucket), statistics.median(c for _, c in bucket))
        for bucket in times
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    import transformers

    from sslspeech.interop.hf import export_hf
    from sslspeech.models.configs import base
    from sslspeech.models.hubert import HuBERT

    torch.manual_seed(0)
    ours = HuBERT(base()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(ours, tmp)
        theirs = transformers.HubertModel.from_pretrained(tmp).eval()
    waveforms = torch.randn(1, int(16000 * args.seconds))

    with torch.inference_mode():
        diff = (ours(waveforms) - theirs(waveforms).last_hidden_state).abs().max().item()
        t_ours, t_hf = median_times(
            [lambda: ours(waveforms), lambda: theirs(waveforms)], args.repeats, args.warmup
        )
    common = {
        "model": "hubert_base",
        "audio_s": args.seconds,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    figures = {
        "sslspeech_forward_s": t_ours[0],
        "transformers_forward_s": t_hf[0],
        "speedup_vs_transformers": t_hf[0] / t_ours[0],
        "sslspeech_forward_cpu_s": t_ours[1],
        "transformers_forward_cpu_s": t_hf[1],
        "cpu_speedup_vs_transformers": t_hf[1] / t_ours[1],
        "max_abs_diff": diff,
    }
    for name, value in figures.items():
        print(json.dumps({"figure": name, "value": round(value, 7), **common}))


if __name__ == "__main__":
    main()
