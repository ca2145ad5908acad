"""HuBERT-base inference on CPU: sslspeech vs transformers HubertModel, same random weights.

Prints one JSON line per figure: median seconds per forward of a 10 s utterance for our CPU
inference path (`optimize_for_cpu_inference`), our plain modules and transformers, the
speed-ups, and the max |difference| from transformers of both our paths on 1 s of noise, of a
DC offset (5 + 0.01 noise) and of a constant waveform (all ones).
"""

from __future__ import annotations

import argparse
import copy
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


def max_abs_diffs(ours: dict[str, torch.nn.Module], theirs: torch.nn.Module) -> dict[str, float]:
    """`max_abs_diff_{path}_{input}`: max |ours - transformers| of each of our paths on 1 s of
    noise, of a DC offset (the cancellation case of conv + GroupNorm) and of all ones."""
    noise = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    inputs = {"noise": noise, "dc_offset": 5 + 0.01 * noise, "constant": torch.ones(1, 16000)}
    diffs = {}
    for kind, waveforms in inputs.items():
        reference = theirs(waveforms).last_hidden_state
        for path, model in ours.items():
            diff = (model(waveforms) - reference).abs().max().item()
            diffs[f"max_abs_diff_{path}_{kind}"] = diff
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    import transformers

    from sslspeech.interop.hf import export_hf
    from sslspeech.models.configs import base
    from sslspeech.models.cpu_inference import optimize_for_cpu_inference
    from sslspeech.models.hubert import HuBERT

    torch.manual_seed(0)
    plain = HuBERT(base()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(plain, tmp)
        theirs = transformers.HubertModel.from_pretrained(tmp).eval()
    ours = optimize_for_cpu_inference(copy.deepcopy(plain))
    waveforms = torch.randn(1, int(16000 * args.seconds))

    with torch.inference_mode():
        diffs = max_abs_diffs({"fast": ours, "plain": plain}, theirs)
        t_ours, t_hf, t_plain = median_times(
            [lambda: ours(waveforms), lambda: theirs(waveforms), lambda: plain(waveforms)],
            args.repeats,
            args.warmup,
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
        "sslspeech_plain_forward_s": t_plain[0],
        "transformers_forward_s": t_hf[0],
        "speedup_vs_transformers": t_hf[0] / t_ours[0],
        "plain_speedup_vs_transformers": t_hf[0] / t_plain[0],
        "sslspeech_forward_cpu_s": t_ours[1],
        "sslspeech_plain_forward_cpu_s": t_plain[1],
        "transformers_forward_cpu_s": t_hf[1],
        "cpu_speedup_vs_transformers": t_hf[1] / t_ours[1],
        **diffs,
    }
    for name, value in figures.items():
        print(json.dumps({"figure": name, "value": round(value, 7), **common}))


if __name__ == "__main__":
    main()
