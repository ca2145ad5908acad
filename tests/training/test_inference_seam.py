"""Training never takes the CPU inference fast paths (SpidR's no-grad teacher forward and inline
validation included); validating a saved checkpoint does, with the loss of inline validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.training.config import load_config
from sslspeech.training.metrics import read_metrics
from sslspeech.training.trainer import train
from sslspeech.training.validation import validate_checkpoint
from tests.models.test_cpu_inference import count_gemm_calls, needs_onednn
from tests.training.conftest import CONFIGS, small_run


@needs_onednn
def test_spidr_training_never_takes_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tone_manifest: Path
) -> None:
    """4 steps of tiny SpidR with inline validation call oneDNN's GEMM never; validating the
    last checkpoint calls it and reproduces the inline validation loss."""
    overrides = small_run(
        tmp_path,
        tone_manifest,
        "run.max_steps=4",
        "run.validate_every=4",
        "checkpoint.save_every=4",
        f"data.val_manifest={tone_manifest}",
    )
    calls = count_gemm_calls(monkeypatch)
    assert train(load_config(CONFIGS / "tiny_spidr.toml", overrides))["step"] == 4
    assert not calls
    record = validate_checkpoint(
        tone_manifest, tmp_path / "checkpoints" / "step_4.pt", torch.device("cpu")
    )
    assert calls
    inline = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "val"]
    assert record["loss"] == pytest.approx(inline[-1]["loss"], rel=1e-5)
