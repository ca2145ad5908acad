"""The loss reduction: objectives pass on summed losses and their frame counts, the loop divides
the gradients by the frames of every micro-batch (not by micro-batches), and HuBERT's count
follows its loss terms (pred_masked_weight = 0 counts only unmasked frames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslspeech.training.config import load_config
from sslspeech.training.data import to_device
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.objectives import Loss
from sslspeech.training.trainer import Trainer
from tests.training.conftest import CONFIGS, small_run


class ScaledSum:
    """A fake objective: micro-batch i costs count_i * weight_i * sum(mask_embedding)."""

    freeze_step = None

    def __call__(self, module: nn.Module, batch: dict[str, Any]) -> Loss:
        embedding = module.mask_embedding.sum()
        total = batch["count"] * batch["weight"] * embedding
        return Loss(total=total, count=batch["count"], stats={})

    def after_step(self, model: nn.Module, step: int) -> dict[str, float]:
        return {}

    def resume(self, model: nn.Module, step: int) -> None:
        pass


def _trainer(tmp_path: Path, manifest: Path, *extra: str) -> Trainer:
    overrides = small_run(tmp_path, manifest, "optim.clip_norm=0", *extra)
    config = load_config(CONFIGS / "tiny_hubert.toml", overrides)
    return Trainer(config, resolve_environment("cpu", {}))


def test_the_loop_divides_by_the_frames_of_all_micro_batches(
    tmp_path: Path, tone_manifest: Path
) -> None:
    """Micro-batches of 3 and 7 frames weighted 1 and 2: gradient and logged loss are the
    per-frame mean (3 + 14) / 10 = 1.7, not the mean of the micro-batch means (1.5)."""
    trainer = _trainer(tmp_path, tone_manifest)
    trainer.objective = ScaledSum()
    grads: list[torch.Tensor] = []
    embedding = trainer.model.mask_embedding
    trainer.optimizer.register_step_pre_hook(lambda *_: grads.append(embedding.grad.clone()))
    start = float(embedding.detach().sum())
    micro_batches = [
        {"lengths": torch.tensor([16000]), "count": 3, "weight": 1.0},
        {"lengths": torch.tensor([16000]), "count": 7, "weight": 2.0},
    ]
    trainer.train_step(micro_batches)
    torch.testing.assert_close(grads[0], torch.full_like(grads[0], 1.7))
    assert abs(trainer.meter.pop()["loss"] - 1.7 * start) < 1e-4


def test_unmasked_only_loss_counts_unmasked_frames(tmp_path: Path, tone_manifest: Path) -> None:
    """pred_masked_weight = 0, pred_nomask_weight = 1: Loss.count is the number of valid
    unmasked frames and Loss.total / count their mean cross entropy (+ the feature penalty)."""
    trainer = _trainer(
        tmp_path, tone_manifest, "model.pred_masked_weight=0", "model.pred_nomask_weight=1"
    )
    batch = to_device(next(trainer.batches()), trainer.env.device)
    with torch.no_grad():
        loss = trainer.objective(trainer.module, batch)
        out = trainer.model.compute_logits(
            batch["waveforms"], batch["labels"].clamp(min=0), batch["mask"], batch["lengths"]
        )
    n_unmasked = int(batch["unmasked_frames"].numel())
    assert loss.count == n_unmasked == out.logit_u.shape[0] > 0
    assert int(batch["masked_frames"].numel()) > 0
    zeros = torch.zeros(n_unmasked, dtype=torch.long)
    mean = F.cross_entropy(out.logit_u, zeros) + 10.0 * out.features_pen
    torch.testing.assert_close(loss.total / loss.count, mean)


@pytest.mark.parametrize("name", ["hubert", "spidr"])
def test_crop_batching_trains_on_unpadded_batches(
    tmp_path: Path, tone_manifest: Path, name: str
) -> None:
    """data.batching = "crop": the loader's batches have no padding, labels as many as the
    frames need, and a training step on them gives a finite loss over every listed frame."""
    overrides = [
        f"run.workdir={tmp_path}",
        f"data.manifest={tone_manifest}",
        "data.batching=crop",
        "run.validate_every=0",
        "logging.progress=false",
    ]
    config = load_config(CONFIGS / f"tiny_{name}.toml", overrides)
    trainer = Trainer(config, resolve_environment("cpu", {}))
    loader = trainer.batches()
    batches = [next(loader) for _ in range(2)]
    for batch in batches:
        lengths = batch["lengths"]
        assert not batch["padded"] and bool((lengths == batch["waveforms"].shape[1]).all())
        frames = int(batch["frame_lengths"][0])
        assert batch["masked_frames"].numel() + batch["unmasked_frames"].numel() == (
            len(lengths) * frames
        )
        if name == "hubert":
            assert batch["labels"].shape[1] >= frames and bool((batch["labels"] >= 0).all())
    trainer.train_step(batches)
    values = trainer.meter.pop()
    assert torch.isfinite(torch.tensor(values["loss"]))
