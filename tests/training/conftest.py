"""Fixtures of the training tests: a tiny learnable tone corpus and small-run overrides."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.training.corpus import make_tone_corpus

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def subprocess_env() -> dict[str, str]:
    """Environment of a `python -m sslspeech` child: this checkout's sources first (not an
    installed sslspeech), one thread (as `one_thread`)."""
    path = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread (tiny ops: 2 threads only add contention, 12x slower on this 2-core
    machine under `pytest -n 2`); the previous count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """`single_thread` around every training test."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tone_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 utterances of 0.4-0.8 s of tones with 50 Hz labels (a `units` column)."""
    return make_tone_corpus(
        tmp_path_factory.mktemp("tones"), num_utterances=16, min_frames=20, max_frames=40
    )


def small_run(workdir: Path, manifest: Path, *extra: str) -> list[str]:
    """Overrides that make a tiny config train in a few seconds on the tone corpus."""
    return [
        f"run.workdir={workdir}",
        f"data.manifest={manifest}",
        "data.max_sample_size=8000",
        "data.min_sample_size=3200",
        "data.max_batch_samples=24000",
        "run.validate_every=0",
        "logging.progress=false",
        *extra,
    ]
