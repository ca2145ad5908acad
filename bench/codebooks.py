"""Codebook units (`transcribe --checkpoint`) on CPU: audio seconds per second, batched vs one
utterance at a time.

A random small SpidR (no download: base conv stack, `--layers` layers `--width` wide, 4
codebooks of 256), the posteriorgram of its last codebook layer over utterances of mixed lengths
drawn uniformly in [--min-seconds, --max-seconds]. "unbatched" is the utterance's own
`get_codebooks` on its standardized waveform (what transcription did before batching);
"batched" is `sslspeech.units.codebooks.batched_codebook_posteriors` with each
`--batch-seconds` budget. Runs are interleaved (the machine may be shared) and medians reported
(on a shared machine the CPU-time figure, ideally with `--threads 1`, is the steadier one);
one JSON line per setting, with the max |batched - unbatched| difference of the posteriorgrams
and whether every argmax unit agrees.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from extract import max_abs_diff, report_batched  # bench/extract.py: batched vs not


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-seconds", type=float, nargs="+", default=[20.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sslspeech.data.audio import standardize
    from sslspeech.models.spidr import SpidR, SpidRConfig
    from sslspeech.units.codebooks import batched_codebook_posteriors

    torch.manual_seed(0)
    config = SpidRConfig(
        num_layers=args.layers,
        embed_dim=args.width,
        ffn_dim=4 * args.width,
        num_heads=args.width // 64,
        num_codebooks=4,
    )
    model = SpidR(config).eval()
    seconds = torch.empty(args.utterances).uniform_(args.min_seconds, args.max_seconds)
    waveforms = [torch.randn(int(s * 16000)).numpy() for s in seconds.tolist()]
    audio_s = sum(len(w) for w in waveforms) / 16000

    @torch.inference_mode()
    def unbatched() -> list[torch.Tensor]:
        return [
            model.get_codebooks(standardize(torch.from_numpy(w))[None])[-1][0] for w in waveforms
        ]

    def batched(budget_s: float) -> Callable[[], list[torch.Tensor]]:
        budget = int(budget_s * 16000)

        def run() -> list[torch.Tensor]:
            found = dict(
                batched_codebook_posteriors(model, waveforms, [args.layers], batch_samples=budget)
            )
            return [found[i][args.layers] for i in range(len(waveforms))]

        return run

    compare = {
        "max_abs_diff": max_abs_diff,
        "units_equal": lambda outputs, reference: all(
            torch.equal(got.argmax(-1), want.argmax(-1))
            for got, want in zip(outputs, reference, strict=True)
        ),
    }
    label = f"spidr_{args.layers}x{args.width}"
    names = {"bench": "codebooks", "model": label, "layer": args.layers}
    report_batched(unbatched, batched, args, audio_s, names, compare)


if __name__ == "__main__":
    main()
