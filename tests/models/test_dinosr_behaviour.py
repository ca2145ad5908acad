"""DinoSR / SpidR behaviour beyond the fixtures: masks, gradients, teacher freezing, presets,
config validation, autocast. Tiny random models, CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sslspeech.data.masking import compute_mask
from sslspeech.errors import ConfigError, DataError
from sslspeech.models import dinosr, spidr
from sslspeech.models.dinosr import DinoSR, DinoSRConfig
from sslspeech.models.masked import masked_frames, select_rows
from sslspeech.models.spidr import SpidR, SpidRConfig

TINY: dict[str, Any] = {
    "extractor_conv_layers": [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
    "embed_dim": 32,
    "ffn_dim": 64,
    "num_layers": 3,
    "num_heads": 2,
    "pos_conv_kernel": 15,
    "pos_conv_groups": 4,
    "num_codebooks": 2,
    "codebook_size": 8,
}


def _model(cls: type[DinoSR], **overrides: Any) -> DinoSR:
    torch.manual_seed(0)
    config_class = SpidRConfig if cls is SpidR else DinoSRConfig
    return cls(config_class(**{**TINY, "dropout": 0.0, "attention_dropout": 0.0, **overrides}))


def _perturb_(model: DinoSR) -> None:
    """Make every parameter (teacher included) non-trivial so EMA moves are visible."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))


def _waveforms(batch: int = 2, samples: int = 8000) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cls", [DinoSR, SpidR])
def test_backward_reaches_student_not_teacher(cls: type[DinoSR]) -> None:
    """loss.mean().backward() gives gradients to student, heads and mask embedding only; the
    SpidR student's last norm is frozen."""
    model = _model(cls).train()
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, 5:15] = True
    loss, _ = model(_waveforms(), mask=mask)
    assert loss.shape == (20,)
    loss.mean().backward()
    assert model.mask_embedding.grad is not None and model.heads.weight.grad is not None
    assert model.student.layers[0].attention.qkv.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    frozen = model.student.layers[-1].final_layer_norm.weight
    assert frozen.requires_grad is (cls is DinoSR)


@pytest.mark.parametrize("cls", [DinoSR, SpidR])
def test_mask_none(cls: type[DinoSR]) -> None:
    """mask=None: eval predicts every valid frame unmasked (codebooks untouched); train mode
    needs a mask (the data side draws it): with one drawn by `data.masking`, the codebooks move
    at `update_teacher`, after the optimizer step, not in the forward."""
    model = _model(cls).eval()
    before = model.codebooks.sums.clone()
    lengths = torch.tensor([8000, 5000])
    with torch.no_grad():
        loss, stats = model(_waveforms(), lengths=lengths)
    assert loss.shape == (int(model.frame_lengths(lengths).sum()),)
    assert torch.isfinite(loss).all() and stats["target_ppl"] >= 1
    assert torch.equal(model.codebooks.sums, before)
    model.train()
    with pytest.raises(DataError, match=r"data\.masking"):
        model(_waveforms())
    mask = compute_mask((2, 24), 0.65, 5, min_masks=2, generator=torch.Generator().manual_seed(3))
    loss, _ = model(_waveforms(), mask=mask)
    assert loss.shape == (int(mask.sum()),)
    assert torch.equal(model.codebooks.sums, before)
    model.update_teacher(1)
    assert not torch.equal(model.codebooks.sums, before)


@pytest.mark.parametrize("cls", [DinoSR, SpidR])
def test_listed_mask_gives_the_bool_mask_results(cls: type[DinoSR]) -> None:
    """A `MaskedFrames` (the trainer's, frames listed beforehand) gives the per-frame losses,
    gradients and codebook statistics of the same bool mask, on a padded batch."""
    lengths = torch.tensor([8000, 5000])
    results = []
    for listed in (False, True):
        model = _model(cls).train()
        frame_lengths = model.frame_lengths(lengths)
        mask = compute_mask((2, 24), 0.65, 5, 2, frame_lengths, torch.Generator().manual_seed(4))
        given = masked_frames(mask, frame_lengths) if listed else mask
        loss, _ = model(_waveforms(), mask=given, lengths=lengths)
        loss.sum().backward()
        assert model.codebooks.pending is not None
        results.append((loss.detach(), model.mask_embedding.grad, model.codebooks.pending))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(theirs, ours)


def test_bad_mask_is_an_error() -> None:
    """A mask that is not (batch, >= frames) bool raises DataError naming the fix."""
    model = _model(DinoSR)
    with pytest.raises(DataError, match="mask_from_indices"):
        model(_waveforms(), mask=torch.zeros(2, 24, dtype=torch.long))
    with pytest.raises(DataError, match="frames"):
        model(_waveforms(), mask=torch.zeros(2, 3, dtype=torch.bool))


def test_freeze_step_freezes_teacher_and_extractor() -> None:
    """At freeze_step the decay is 1: teacher unchanged, extractor and projection frozen."""
    model = _model(DinoSR, freeze_step=50, ema_final_step=20)
    _perturb_(model)
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert model.update_teacher(49) < 1.0
    moved = model.teacher.state_dict()["layer_norm.weight"]
    assert not torch.equal(moved, teacher["layer_norm.weight"])
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    assert model.update_teacher(50) == 1.0
    assert all(torch.equal(v, teacher[k]) for k, v in model.teacher.state_dict().items())
    assert not any(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    assert not any(p.requires_grad for p in model.encoder.feature_projection.parameters())
    assert model.current_step.item() == 50


def test_update_teacher_copies_pos_conv() -> None:
    """Excluded parameters (pos_conv_embed) are copied from the student, others averaged."""
    model = _model(SpidR)
    _perturb_(model)
    model.update_teacher(10)
    for name, param in model.teacher.named_parameters():
        student = model.student.get_parameter(name)
        assert torch.equal(param, student) is name.startswith("pos_conv_embed"), name


def test_autocast_bf16_forward() -> None:
    """bf16 autocast on CPU: finite loss; codeword assignment stays float32."""
    model = _model(SpidR).train()
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, :12] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = model(_waveforms(), mask=mask)
    assert torch.isfinite(loss.float()).all() and torch.isfinite(stats["pred_ppl"])
    assert model.codebooks.sums.dtype == torch.float32


def test_presets_are_the_published_hyper_parameters() -> None:
    """Base presets: 12 x 768, 12 heads, FFN 3072, pos conv 95/16/depth 5, 8 x 256 codebooks."""
    for config in (spidr.base(), dinosr.base(), dinosr.base_original()):
        assert (config.embed_dim, config.num_layers, config.num_heads, config.ffn_dim) == (
            768,
            12,
            12,
            3072,
        )
        assert (config.pos_conv_kernel, config.pos_conv_groups, config.pos_conv_depth) == (
            95,
            16,
            5,
        )
        assert (config.num_codebooks, config.codebook_size, config.codebook_decay) == (8, 256, 0.9)
        assert config.extractor_mode == "layer_norm" and config.normalize_input
    assert spidr.base().layer_drop == 0.0 and dinosr.base().layer_drop == 0.05
    assert not spidr.base().qkv_bias and dinosr.base_original().qkv_bias
    assert (spidr.base().ema_timescale, spidr.base().ema_threshold) == (20000, 1e-7)


def test_config_validation_and_dict_round_trip() -> None:
    """Bad values raise ConfigError; to_dict/from_dict round-trips (lists become tuples)."""
    with pytest.raises(ConfigError, match="num_codebooks"):
        SpidRConfig(**{**TINY, "num_codebooks": 4})
    with pytest.raises(ConfigError, match="pos_conv_depth"):
        DinoSRConfig(**{**TINY, "pos_conv_depth": 1})
    with pytest.raises(ConfigError, match="ema_timescale"):
        SpidRConfig(**{**TINY, "ema_timescale": 0})
    config = SpidRConfig(**TINY)
    assert SpidRConfig.from_dict(config.to_dict()) == config
    assert config.replace(ema_exclude_layers=["a", "b"]).ema_exclude_layers == ("a", "b")


def test_pure_bf16_model() -> None:
    """A model cast to bfloat16 (codebook buffers included) trains a step and predicts units."""
    model = _model(SpidR).to(torch.bfloat16).train()
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, 4:14] = True
    loss, _ = model(_waveforms().bfloat16(), mask=mask)
    loss.float().mean().backward()
    assert torch.isfinite(loss.float()).all() and model.update_teacher(5) < 1.0
    assert model.get_codebooks(_waveforms().bfloat16())[0].dtype == torch.float32


def test_select_rows_matches_index_select() -> None:
    """select_rows: same values and gradient as index_select for unique indices."""
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 4, 8])
    assert torch.autograd.gradcheck(select_rows, (x, index))
    weights = torch.randn(4, 4, dtype=torch.float64)
    (select_rows(x, index) * weights).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    (x.index_select(0, index) * weights).sum().backward()
    assert torch.equal(fast, x.grad)
