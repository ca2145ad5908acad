"""Host-device synchronizations of the training forward + backward: at most one per micro-batch
for HuBERT, DinoSR and SpidR on the tiny configs' batches, padded and cropped, counted by
`SyncCounter` (scalar reads, nonzero, boolean-mask indexing, masked_select, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.training.config import load_config
from sslspeech.training.data import to_device
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.trainer import Trainer
from tests.training.conftest import CONFIGS
from tests.training.syncs import SyncCounter

MAX_SYNCS_PER_MICRO_BATCH = 1


@pytest.mark.parametrize("batching", ["pad", "crop"])
@pytest.mark.parametrize("name", ["hubert", "dinosr", "spidr"])
def test_training_forward_and_backward_barely_sync(
    tmp_path: Path, tone_manifest: Path, name: str, batching: str
) -> None:
    """Four micro-batches (the config's batch settings, padded to their longest row or cropped
    to their shortest) each sync at most once; the same model called with a plain bool mask
    (the checked public path) does sync, so the counter sees what it should."""
    overrides = [
        f"run.workdir={tmp_path}",
        f"data.manifest={tone_manifest}",
        f"data.batching={batching}",
        "run.validate_every=0",
        "logging.progress=false",
    ]
    trainer = Trainer(
        load_config(CONFIGS / f"tiny_{name}.toml", overrides), resolve_environment("cpu", {})
    )
    batches = trainer.batches()
    padded = []
    for _ in range(4):
        batch = to_device(next(batches), trainer.env.device)
        padded.append(batch["padded"])
        with SyncCounter() as counter:
            loss = trainer.objective(trainer.module, batch)
            loss.total.backward()
        assert counter.total <= MAX_SYNCS_PER_MICRO_BATCH, dict(counter.ops)
    assert any(padded) == (batching == "pad")
    args = [batch["waveforms"]] + ([batch["labels"].clamp(min=0)] if name == "hubert" else [])
    with SyncCounter() as counter:
        trainer.module(*args, mask=batch["mask"], lengths=batch["lengths"])
    assert counter.total > MAX_SYNCS_PER_MICRO_BATCH


def test_the_counter_sees_each_kind_of_sync() -> None:
    """Scalar reads, nonzero, boolean-mask indexing (read and write), masked_select: one each;
    integer indexing and shape arithmetic: none."""
    x = torch.arange(6.0)
    keep = x > 2
    with SyncCounter() as counter:
        float(x.sum())
        x.nonzero()
        x[keep]
        x.clone()[keep] = 0.0
        x.masked_select(keep)
        x[torch.tensor([0, 2])]
        x.view(2, 3).flatten()
    assert counter.total == 5, dict(counter.ops)
