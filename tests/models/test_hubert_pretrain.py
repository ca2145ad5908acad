"""HuBERTPretrain in training: feature_grad_mult scales only the extractor's gradient, the
unmasked-loss option follows fairseq's criterion, padding is excluded from the loss, random
masks are drawn in train mode, and a few steps on one batch lower the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslspeech.errors import DataError
from sslspeech.models.configs import HuBERTPretrainConfig
from sslspeech.models.hubert import HuBERTPretrain

NO_DROPOUT = {
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "projection_dropout": 0.0,
    "layer_drop": 0.0,
}


def tiny(**overrides) -> HuBERTPretrainConfig:
    values = {
        "extractor_conv_layers": ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2,
        "embed_dim": 24,
        "ffn_dim": 48,
        "num_layers": 2,
        "num_heads": 2,
        "pos_conv_kernel": 8,
        "pos_conv_groups": 2,
        "num_classes": 7,
        "final_dim": 12,
        "label_rate": 100.0,
        **NO_DROPOUT,
    }
    return HuBERTPretrainConfig(**{**values, **overrides})


def batch(generator_seed: int = 0, frames: int = 20):
    g = torch.Generator().manual_seed(generator_seed)
    waveforms = torch.randn(2, 320 * frames + 80, generator=g)
    labels = torch.randint(0, 7, (2, 2 * frames + 1), generator=g)  # label rate 100 Hz
    mask = torch.rand(2, frames, generator=g) < 0.5
    return waveforms, labels, mask


def test_feature_grad_mult_scales_only_extractor_gradients() -> None:
    """Same forward; conv-extractor gradients scaled by feature_grad_mult, the rest unchanged."""
    torch.manual_seed(0)
    full = HuBERTPretrain(tiny(feature_grad_mult=1.0)).train()
    scaled = HuBERTPretrain(tiny(feature_grad_mult=0.1)).train()
    scaled.load_state_dict(full.state_dict())
    waveforms, labels, mask = batch()
    losses = []
    for model in (full, scaled):
        loss, _ = model(waveforms, labels, mask=mask)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for (name, a), (_, b) in zip(full.named_parameters(), scaled.named_parameters(), strict=True):
        factor = 0.1 if name.startswith("encoder.feature_extractor.") else 1.0
        torch.testing.assert_close(b.grad, a.grad * factor, rtol=1e-4, atol=1e-7, msg=name)


def test_unmasked_weight_follows_fairseq_criterion() -> None:
    """With pred_nomask_weight w: loss = (CE_m + w CE_u + 10 pen n) / n, n = n_m + n_u."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny(pred_nomask_weight=0.5)).eval()
    waveforms, labels, mask = batch()
    with torch.no_grad():
        out = model.compute_logits(waveforms, labels, mask)
        loss, stats = model(waveforms, labels, mask=mask)
    zeros = torch.zeros(out.logit_m.shape[0], dtype=torch.long)
    loss_m = F.cross_entropy(out.logit_m, zeros, reduction="sum")
    loss_u = F.cross_entropy(
        out.logit_u, torch.zeros(out.logit_u.shape[0], dtype=torch.long), reduction="sum"
    )
    n = out.logit_m.shape[0] + out.logit_u.shape[0]
    expected = (loss_m + 0.5 * loss_u + 10 * out.features_pen * n) / n
    torch.testing.assert_close(loss, expected)
    assert {"loss_u", "acc_m", "acc_u", "features_pen"} <= set(stats)


def test_padding_is_excluded_from_the_loss() -> None:
    """Only valid frames of each row count as masked or unmasked predictions."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny()).eval()
    waveforms, labels, _ = batch()
    lengths = torch.tensor([waveforms.shape[1], 3600])
    mask = torch.ones(2, 20, dtype=torch.bool)
    with torch.no_grad():
        out = model.compute_logits(waveforms, labels, mask, lengths)
    frames = model.frame_lengths(lengths, num_samples=waveforms.shape[1]).clamp(max=20)
    assert out.logit_m.shape[0] == int(frames.sum()) and out.logit_u.shape[0] == 0


def test_label_rate_alignment_and_label_errors() -> None:
    """Label rate 100 over 50 Hz frames keeps every second label; bad labels fail clearly."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny()).eval()
    features = torch.zeros(2, 20, 16)
    labels = torch.arange(41).repeat(2, 1) % 7
    trimmed, picked = model.align_labels(features, labels)
    assert trimmed.shape[1] == 20 and torch.equal(picked[0], labels[0, ::2][:20])
    short_features, short_labels = model.align_labels(features, labels[:, :31])
    assert short_features.shape[1] == 15 and short_labels.shape[1] == 15
    waveforms, labels, mask = batch()
    with pytest.raises(DataError, match="cluster ids"):
        model(waveforms, labels + 7, mask=mask)
    one_per_frame = HuBERTPretrain(tiny(label_rate=None)).eval()
    with pytest.raises(DataError, match="exactly one label per frame"):
        one_per_frame(waveforms, labels, mask=mask)
    with pytest.raises(DataError, match="mask="):
        model(waveforms, labels)


def test_training_steps_lower_the_loss() -> None:
    """Train mode draws its own masks; a few Adam steps on one batch lower the loss."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny(mask_prob=0.5, mask_length=3)).train()
    waveforms, labels, mask = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = model(waveforms, labels, mask=mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    loss, stats = model(waveforms, labels)
    assert torch.isfinite(loss) and int(stats["n_masked"]) > 0
