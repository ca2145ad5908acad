"""The SpidR paper's unit table (ABX on discrete units per layer, purities, PNMI, perplexity,
bitrate) for a tiny SpidR trained on the synthetic corpus, made by the commands alone:

    sslspeech synth -> train configs/tiny_spidr.toml -> transcribe --checkpoint --layer L
    -> abx ITEM UNITS --distance onehot, abx --checkpoint --distance kl_symmetric --layer all
    -> units quality UNITS ALIGNMENTS

    PYTHONPATH=src .venv/bin/python bench/spidr_units_table.py [--steps 300] [--workdir DIR] \
        [--set model.codebook_size=16 --set optim.lr=5e-4]

Prints one JSON line per codebook layer, then one with the run's settings and timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def sslspeech(*argv: str) -> str:
    """Run one `sslspeech` command in a subprocess; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "sslspeech", *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def train_overrides(steps: int) -> list[str]:
    """tiny_spidr.toml stretched to `steps`: schedule, teacher freeze, EMA timescale, saves."""
    warmup, decay = steps // 15, steps // 2
    return [
        f"schedule.warmup_steps={warmup}",
        f"schedule.hold_steps={steps - warmup - decay}",
        f"schedule.decay_steps={decay}",
        f"model.freeze_step={2 * steps // 3}",
        f"model.ema_timescale={steps / 3}",
        f"checkpoint.save_every={steps}",
        f"run.validate_every={steps}",
    ]


def layer_row(corpus: Path, checkpoint: Path, units_dir: Path, layer: int) -> dict[str, Any]:
    """Units of one layer, their onehot ABX (within and across speaker) and quality."""
    units = units_dir / f"layer{layer}.jsonl"
    sslspeech("transcribe", "--checkpoint", str(checkpoint), "--layer", str(layer), "--quiet",
              str(corpus / "manifest.csv"), str(units))  # fmt: skip
    row: dict[str, Any] = {"layer": layer}
    for speaker in ("within", "across"):
        line = sslspeech("abx", str(corpus / "phones.item"), str(units), "--frequency", "50",
                         "--distance", "onehot", "--speaker", speaker)  # fmt: skip
        row[f"abx_onehot_{speaker}"] = json.loads(line)["score"]
    alignments = str(corpus / "alignments.jsonl")
    quality = json.loads(sslspeech("units", "quality", str(units), alignments))
    keys = ("phone_purity", "cluster_purity", "pnmi", "unit_perplexity", "num_units_used",
            "bitrate", "bitrate_dedup")  # fmt: skip
    row.update({key: quality[key] for key in keys})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: temp)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra training override (after the stretched schedule), e.g. optim.lr=5e-4",
    )
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="spidr_units_"))
    corpus, run, units_dir = root / "synth", root / "run", root / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    start = time.perf_counter()
    if not (corpus / "meta.json").is_file():
        sslspeech("synth", str(corpus), "--workers", "1")
    times["synth_s"] = time.perf_counter() - start
    start = time.perf_counter()
    checkpoint = run / "checkpoints" / f"step_{args.steps}.pt"
    if not checkpoint.is_file():
        sslspeech("train", str(REPO / "configs" / "tiny_spidr.toml"), "--workdir", str(run),
                  "--manifest", str(corpus / "manifest.csv"), "--max-steps", str(args.steps),
                  *train_overrides(args.steps), *args.overrides)  # fmt: skip
    times["train_s"] = time.perf_counter() - start
    if not checkpoint.is_file():
        raise SystemExit(f"training wrote no {checkpoint}; see {run}")
    start = time.perf_counter()
    kl_lines = sslspeech("abx", str(corpus / "phones.item"), "--checkpoint", str(checkpoint),
                         "--audio", str(corpus / "wav"), "--distance", "kl_symmetric",
                         "--layer", "all")  # fmt: skip
    kl = {line["layer"]: line["score"] for line in map(json.loads, kl_lines.splitlines())}
    for layer in sorted(kl):
        row = layer_row(corpus, checkpoint, units_dir, layer)
        print(json.dumps({"figure": "spidr_units_table", **row, "abx_kl_within": kl[layer]}))
    times["evaluate_s"] = time.perf_counter() - start
    settings = {"steps": args.steps, "config": "configs/tiny_spidr.toml", "workdir": str(root),
                "overrides": args.overrides}  # fmt: skip
    print(json.dumps({"figure": "spidr_units_table_run", **settings, **times}))


if __name__ == "__main__":
    main()
