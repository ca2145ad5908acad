"""bench/gpu.py, the one GPU check, runs end to end on CPU with the tiny configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.training.conftest import REPO


def test_gpu_check_runs_on_cpu_with_tiny_configs() -> None:
    """Both tiny configs train through the loop and report every figure the GPU run reports:
    step time, throughput, TFLOP/s, memory, compile counters and the SDPA kernels profiled."""
    command = [
        sys.executable,
        str(REPO / "bench" / "gpu.py"),
        "--tiny",
        "--steps=2",
        "--no-compile",
        "--workers=0",
        "--utterances=12",
        "--override",
        "data.min_sample_size=3200",
        "data.max_sample_size=8000",
        "data.max_batch_samples=24000",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [row["config"] for row in rows] == ["tiny_spidr", "tiny_hubert"]
    for row in rows:
        assert row["device"] == "cpu" and row["steps_measured"] == 2
        assert row["step_time_s"] > 0 and row["audio_seconds_per_second_per_gpu"] > 0
        assert row["tflops_per_gpu"] > 0 and row["mfu"] is None  # no peak known for a CPU
        assert row["compiled_frames"] == 0 and row["graph_breaks"] == 0
        assert any("scaled_dot_product" in name for name in row["sdpa_kernels"])
