"""Layer-feature extraction on CPU: audio seconds per second, batched vs one utterance at a time.

A random HuBERT-base (no download), layer `--layer`, over utterances of mixed lengths drawn
uniformly in [--min-seconds, --max-seconds]. "unbatched" is the model's own forward pass per
utterance (what extraction did before batching); "batched" is
`sslspeech.features.batching.batched_layers` with each `--batch-seconds` budget. Runs are
interleaved (the machine may be shared) and medians reported; one JSON line per setting, and
the max |batched - unbatched| difference.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch

from inference import median_times  # bench/inference.py: interleaved (wall, CPU) medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--batch-seconds", type=float, nargs="+", default=[20.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    from sslspeech.features.batching import batched_layers
    from sslspeech.models.configs import base
    from sslspeech.models.hubert import HuBERT

    torch.manual_seed(0)
    model = HuBERT(base()).eval()
    seconds = torch.empty(args.utterances).uniform_(args.min_seconds, args.max_seconds)
    waveforms = [torch.randn(int(s * 16000)) for s in seconds.tolist()]
    audio_s = sum(len(w) for w in waveforms) / 16000

    @torch.inference_mode()
    def unbatched() -> list[torch.Tensor]:
        return [
            model.get_intermediate_outputs(w[None], num_layers=args.layer)[-1][0] for w in waveforms
        ]

    def batched(budget_s: float) -> Callable[[], list[torch.Tensor]]:
        budget = int(budget_s * 16000)

        def run() -> list[torch.Tensor]:
            found = dict(batched_layers(model, waveforms, [args.layer], batch_samples=budget))
            return [found[i][0] for i in range(len(waveforms))]

        return run

    names = {"bench": "extract", "model": "hubert_base", "layer": args.layer}
    report_batched(unbatched, batched, args, audio_s, names, {"max_abs_diff": max_abs_diff})


def max_abs_diff(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """The largest |difference| between the outputs of a batched run and the unbatched ones."""
    return max(
        (got - want).abs().max().item() for got, want in zip(outputs, reference, strict=True)
    )


def report_batched(
    unbatched: Callable[[], list[torch.Tensor]],
    batched: Callable[[float], Callable[[], list[torch.Tensor]]],
    args: argparse.Namespace,
    audio_s: float,
    names: dict[str, object],
    compare: dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], object]],
) -> None:
    """Time `unbatched` and `batched(b)` for each `args.batch_seconds` (interleaved medians) and
    print one JSON line per setting: speeds, and each `compare` figure of a batched run's
    outputs against the unbatched ones."""
    runs = [unbatched, *(batched(b) for b in args.batch_seconds)]
    medians = median_times(runs, args.repeats, args.warmup)
    reference = unbatched()
    common = {
        **names,
        "utterances": args.utterances,
        "audio_s": round(audio_s, 2),
        "lengths_s": [args.min_seconds, args.max_seconds],
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "torch": torch.__version__,
    }
    settings = ["unbatched", *(f"batched_{b:g}s" for b in args.batch_seconds)]
    for index, (setting, (wall, cpu)) in enumerate(zip(settings, medians, strict=True)):
        figure = {
            **common,
            "setting": setting,
            "median_wall_s": round(wall, 3),
            "audio_s_per_s": round(audio_s / wall, 2),
            "audio_s_per_cpu_s": round(audio_s / cpu, 2),
            "speedup_vs_unbatched": round(medians[0][0] / wall, 3),
        }
        if index:
            outputs = runs[index]()
            figure.update({name: fn(outputs, reference) for name, fn in compare.items()})
        print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
