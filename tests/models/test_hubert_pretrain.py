"""HuBERTPretrain in training: feature_grad_mult scales only the extractor's gradient, the
unmasked-loss option follows fairseq's criterion (sums and their counts, pred_masked_weight = 0
included), padding is excluded from the loss, a listed mask (`MaskedFrames`, the trainer's)
gives what the bool mask gives, train mode needs a mask, and a few steps lower the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslspeech.data.masking import compute_mask
from sslspeech.errors import DataError
from sslspeech.models.configs import HuBERTPretrainConfig
from sslspeech.models.hubert import HuBERTPretrain
from sslspeech.models.masked import masked_frames

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
        loss, _, _ = model(waveforms, labels, mask=mask)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for (name, a), (_, b) in zip(full.named_parameters(), scaled.named_parameters(), strict=True):
        factor = 0.1 if name.startswith("encoder.feature_extractor.") else 1.0
        torch.testing.assert_close(b.grad, a.grad * factor, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize(("masked_weight", "nomask_weight"), [(1.0, 0.5), (0.0, 1.0)])
def test_unmasked_weight_follows_fairseq_criterion(
    masked_weight: float, nomask_weight: float
) -> None:
    """total = w_m CE_m + w_u CE_u + 10 pen n over count n = n_m [if w_m > 0] + n_u [if w_u > 0]:
    with pred_masked_weight = 0 only the unmasked frames are counted."""
    torch.manual_seed(0)
    config = tiny(pred_masked_weight=masked_weight, pred_nomask_weight=nomask_weight)
    model = HuBERTPretrain(config).eval()
    waveforms, labels, mask = batch()
    with torch.no_grad():
        out = model.compute_logits(waveforms, labels, mask)
        total, count, stats = model(waveforms, labels, mask=mask)
    zeros = torch.zeros(out.logit_m.shape[0], dtype=torch.long)
    loss_m = F.cross_entropy(out.logit_m, zeros, reduction="sum")
    loss_u = F.cross_entropy(
        out.logit_u, torch.zeros(out.logit_u.shape[0], dtype=torch.long), reduction="sum"
    )
    n_masked, n_unmasked = out.logit_m.shape[0], out.logit_u.shape[0]
    n = (n_masked if masked_weight > 0 else 0) + n_unmasked
    assert count == n and 0 < n_masked < n_masked + n_unmasked
    expected = masked_weight * loss_m + nomask_weight * loss_u + 10 * out.features_pen * n
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(stats["loss_u"], loss_u / n_unmasked)
    assert {"loss_m", "acc_m", "acc_u", "features_pen"} <= set(stats)


def test_listed_mask_gives_the_bool_mask_results() -> None:
    """A `MaskedFrames` (frames listed beforehand, as the trainer passes it) gives the loss and
    gradients of the same bool mask, on a padded batch."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny()).train()
    waveforms, labels, mask = batch()
    lengths = torch.tensor([waveforms.shape[1], 3600])
    frame_lengths = model.frame_lengths(lengths, num_samples=waveforms.shape[1])
    mask &= torch.arange(20) < frame_lengths[:, None]
    listed = masked_frames(mask, frame_lengths)
    assert listed.padded and listed.masked.numel() == int(mask.sum())
    results = []
    for given in (mask, listed):
        model.zero_grad()
        total, count, _ = model(waveforms, labels, mask=given, lengths=lengths)
        total.backward()
        results.append((total.detach(), count, model.final_proj.weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0])
    assert results[1][1] == results[0][1] == int(mask.sum())
    torch.testing.assert_close(results[1][2], results[0][2])


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
    """Label rate 100 over 50 Hz frames keeps every second label; bad labels fail clearly;
    mask=None masks nothing in eval mode and is an error in train mode."""
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
    total, count, _ = model(waveforms, labels)  # eval without a mask: nothing masked
    assert count == 0 and float(total.detach()) == 0.0
    with pytest.raises(DataError, match=r"data\.masking"):
        model.train()(waveforms, labels)


def test_training_steps_lower_the_loss() -> None:
    """A few Adam steps on one batch, with a mask drawn by `data.masking`, lower the loss."""
    torch.manual_seed(0)
    model = HuBERTPretrain(tiny()).train()
    waveforms, labels, _ = batch()
    mask = compute_mask((2, 20), 0.5, 3, min_masks=2, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        total, count, _ = model(waveforms, labels, mask=mask)
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
        losses.append(float(total.detach()) / count)
    assert losses[-1] < 0.8 * losses[0]
