"""Time and peak memory of loading each hostile file of tests/interop/test_hostile_loads.py.

Each case runs in a fresh process (`resource` limits: `--max-gb` of address space, `--timeout`
seconds), so the sources of an older tree can be measured too (`--src OLD/src`, e.g. a
`git archive` of main) without risking the machine.

    .venv/bin/python bench/hostile.py [--src DIR] [--only SUBSTRING,...] [--timeout 30]

Prints one JSON line per case: seconds, peak memory growth (VmHWM after a reset, MB) and the
outcome (the error's type and message, "loaded" or "timeout"/"killed").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.interop.test_hostile_loads import _MEASURE, _hostile_files  # noqa: E402


def _limits(max_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def main() -> None:
    """Build every case, load each in its own process, print one JSON line per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(REPO / "src"), help="sslspeech sources to measure")
    parser.add_argument("--only", default="", help="comma-separated substrings of case names")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    parser.add_argument("--max-gb", type=float, default=12.0, help="address-space cap per case")
    args = parser.parse_args()
    wanted = [part for part in args.only.split(",") if part]
    env = {**os.environ, "PYTHONPATH": args.src, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as root:
        cases = _hostile_files(Path(root))
        for case, (loader, path) in cases.items():
            if wanted and not any(part in case for part in wanted):
                continue
            record: dict[str, object] = {"case": case, "src": args.src}
            try:
                done = subprocess.run(
                    [sys.executable, "-c", _MEASURE, json.dumps({case: (loader, str(path))})],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=args.timeout,
                    preexec_fn=lambda: _limits(int(args.max_gb * 2**30)),
                )
            except subprocess.TimeoutExpired:
                print(json.dumps({**record, "outcome": f"timeout after {args.timeout} s"}))
                continue
            if done.returncode != 0 or not done.stdout.strip():
                print(json.dumps({**record, "outcome": f"killed: {done.stderr[-200:]}"}))
                continue
            result = json.loads(done.stdout)[case]
            error = result["error"]
            outcome = "loaded" if error is None else f"{error[0]}: {error[1][:200]}"
            print(
                json.dumps(
                    {
                        **record,
                        "seconds": round(result["seconds"], 3),
                        "peak_mb": round(result["peak_bytes"] / 2**20, 1),
                        "outcome": outcome,
                    }
                )
            )


if __name__ == "__main__":
    main()
