"""ABX timing on ../shared/fixtures/abx/synthetic_phones against fastabx 0.9.0's timings.

One JSON line per (feature set, speaker/context, setting): our wall and CPU seconds for the whole
`abx_result` call (item file, feature loading, cells, subsampling, DTW, scoring), the score and
its difference to fastabx, and fastabx's times from the fixture (2-core CPU: pure-PyTorch DTW,
compiled torchdtw kernel, float64 brute force). The machine's load average is printed too:
other processes on a shared CPU make every figure slower.

Usage: python bench/abx.py [--fixture DIR] [--device cpu] [--only mfcc39_100hz] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from sslspeech.evaluation import abx_result

MODES = [("within", "within"), ("across", "within"), ("within", "any"), ("across", "any")]
RATES = {"mfcc39_100hz": 100, "fbank40_50hz": 50}


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared/fixtures/abx/synthetic_phones"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=default)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=sorted(RATES), default=None)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    args = parser.parse_args()
    expected = json.loads((args.fixture / "expected.json").read_text())
    for feature_set, rate in RATES.items():
        if args.only and feature_set != args.only:
            continue
        for speaker, context in MODES:
            mode = f"speaker-{speaker}/context-{context}"
            reference = expected["scores"][feature_set][mode]
            timings = expected["timings_seconds_2_cores_cpu"][feature_set][mode]
            for setting, caps in (("deterministic", (None, None)), ("zerospeech", (10, 5))):
                wall, cpu, result = [], [], None
                for _ in range(args.repeat):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    result = abx_result(
                        args.fixture / "phones.item",
                        args.fixture / f"features_{feature_set}",
                        rate,
                        speaker=speaker,  # type: ignore[arg-type]
                        context=context,  # type: ignore[arg-type]
                        max_size_group=caps[0],
                        max_x_across=caps[1],
                        device=args.device,
                    )
                    wall.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
                assert result is not None
                key = "deterministic" if setting == "deterministic" else "zerospeech_subsampled"
                compiled = timings["fastabx_compiled_torchdtw_s"]
                brute = timings["bruteforce_python_2proc_s"] if setting == "deterministic" else None
                print(
                    json.dumps(
                        {
                            "figure": "abx_seconds",
                            "features": feature_set,
                            "mode": mode,
                            "setting": setting,
                            "ours_wall_s": round(min(wall), 3),
                            "ours_cpu_s": round(min(cpu), 3),
                            "fastabx_compiled_s": compiled.get(
                                setting, compiled.get(f"{setting}_mean")
                            ),
                            "fastabx_pure_pytorch_s": timings["fastabx_purepytorch_dtw_s"][setting],
                            "bruteforce_2proc_s": brute,
                            "n_triplets": result.n_triplets,
                            "score": result.score,
                            "abs_diff_to_fastabx": abs(result.score - reference[key]["score"]),
                            "device": args.device,
                            "torch_threads": torch.get_num_threads(),
                            "load_average_1min": round(os.getloadavg()[0], 2),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
