"""SpidR and DinoSR against the `spidr` package v0.2.0 golden fixtures (../shared/fixtures/spidr):
every folder loaded through from_pretrained, every expected key within the fixture tolerance
(float32: atol 5e-5, rtol 1e-4; integers exact; EMA decays 1e-12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from sslspeech.models import load_model
from sslspeech.models.dinosr import DinoSR, mask_from_indices
from sslspeech.models.spidr import SpidR
from sslspeech.utils.safetensors import load_file

FOLDERS = ["tiny_spidr", "tiny_dinosr", "tiny_dinosr_fairseq_original"]
CLASSES = {"spidr": SpidR, "dinosr": DinoSR}


class Fixture:
    """One fixture folder: inputs, expected tensors and fixture.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.inputs = load_file(folder / "inputs.safetensors")
        self.expected = load_file(folder / "expected.safetensors")
        self.spec: dict[str, Any] = json.loads((folder / "fixture.json").read_text())
        tol = self.spec["tolerance"]["float32"]
        self.atol, self.rtol = tol["atol"], tol["rtol"]

    def check(self, key: str, actual: Tensor, frames: Tensor | None = None) -> None:
        """actual vs expected[key]: exact for integers, else |a - e| <= atol + rtol |e|;
        with `frames`, only frames < frames[b] of each row."""
        expected = self.expected[key]
        actual = actual.detach().cpu()
        assert tuple(actual.shape) == tuple(expected.shape), key
        if frames is not None:
            actual = torch.cat([actual[b, :n] for b, n in enumerate(frames.tolist())])
            expected = torch.cat([expected[b, :n] for b, n in enumerate(frames.tolist())])
        if not expected.dtype.is_floating_point:
            assert torch.equal(actual.to(expected.dtype), expected), key
            return
        torch.testing.assert_close(
            actual.to(expected.dtype), expected, atol=self.atol, rtol=self.rtol, msg=key
        )


def _fixture(fixtures_dir: Path, name: str) -> Fixture:
    return Fixture(fixtures_dir / "spidr" / name)


def _load(fixture: Fixture) -> DinoSR:
    model = load_model(fixture.folder)
    assert isinstance(model, DinoSR)
    return model


def _list_index(model: DinoSR, codebook: int) -> int:
    """Index of a codebook in the reference's get_codebooks list (None entries first)."""
    return model.num_layers - model.num_codebooks + codebook


@pytest.mark.parametrize("name", FOLDERS)
def test_loads_with_the_reference_config(fixtures_dir: Path, name: str) -> None:
    """from_pretrained(folder) builds the fixture's class with its hyper-parameters, eval mode."""
    fixture = _fixture(fixtures_dir, name)
    cls = CLASSES[fixture.spec["model_type"]]
    model = cls.from_pretrained(fixture.folder)
    assert type(model) is cls and not model.training
    ref = fixture.spec["config"]
    cfg = model.config
    assert cfg.embed_dim == ref["encoder_embed_dim"]
    assert cfg.num_layers == ref["encoder_num_layers"]
    assert cfg.num_heads == ref["encoder_num_heads"]
    assert cfg.ffn_dim == ref["encoder_ff_interm_features"]
    assert cfg.qkv_bias == ref["encoder_qkv_bias"]
    assert (cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.pos_conv_depth) == (
        ref["encoder_pos_conv_kernel"],
        ref["encoder_pos_conv_groups"],
        ref["encoder_pos_conv_depth"],
    )
    assert [list(layer) for layer in cfg.extractor_conv_layers] == ref[
        "extractor_conv_layer_config"
    ]
    assert (cfg.num_codebooks, cfg.codebook_size) == (ref["num_codebooks"], ref["codebook_size"])
    assert cfg.codebook_decay == ref["codebook_decay"]
    assert cfg.freeze_step == ref["freeze_step"]
    assert cfg.normalize_input is True
    assert not model.teacher.training


@pytest.mark.parametrize("name", FOLDERS)
def test_eval_outputs(fixtures_dir: Path, name: str) -> None:
    """Conv features, projection, every layer before/after the residual, final output."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    waveforms = fixture.inputs["waveforms"]
    with torch.no_grad():
        features, _ = model.encoder.extract(waveforms, None)
        fixture.check("extract_features", features)
        fixture.check("projected_features", model.encoder.feature_projection(features))
        for i, y in enumerate(model.get_intermediate_outputs(waveforms), start=1):
            fixture.check(f"layer_{i}", y)
        full = model.get_intermediate_outputs(waveforms, before_residual=False)
        for i, y in enumerate(full, start=1):
            fixture.check(f"layer_{i}_after_residual", y)
        fixture.check("final", model.encode(waveforms))
        assert len(model.get_intermediate_outputs(waveforms, num_layers=2)) == 2


@pytest.mark.parametrize("name", FOLDERS)
def test_codebook_predictions(fixtures_dir: Path, name: str) -> None:
    """get_codebooks: K batched (B, T, V) probabilities / int64 one-hots; a batch of one stays
    batched (the reference squeezes it to (T, V))."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    waveforms = fixture.inputs["waveforms"]
    probs = model.get_codebooks(waveforms)
    onehots = model.get_codebooks(waveforms, onehot=True)
    single = model.get_codebooks(waveforms[:1])
    assert len(probs) == len(onehots) == len(single) == model.num_codebooks
    for j in range(model.num_codebooks):
        index = _list_index(model, j)
        assert probs[j].dtype == torch.float32 and onehots[j].dtype == torch.int64
        fixture.check(f"codebook_probs_{index}", probs[j])
        fixture.check(f"codebook_onehot_{index}", onehots[j])
        assert single[j].shape[0] == 1
        fixture.check(f"codebook_probs_single_{index}", single[j][0])


@pytest.mark.parametrize("name", FOLDERS)
def test_loss_and_perplexities(fixtures_dir: Path, name: str) -> None:
    """Per-masked-frame loss (row-major) and target/pred perplexities with the fixture mask."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    mask = fixture.inputs["mask"]
    assert torch.equal(mask_from_indices(fixture.inputs["mask_indices"], mask.shape[1]), mask)
    with torch.no_grad():
        loss, stats = model(fixture.inputs["waveforms"], mask=mask)
    fixture.check("loss", loss)
    fixture.check("target_ppl", stats["target_ppl"])
    fixture.check("pred_ppl", stats["pred_ppl"])


@pytest.mark.parametrize("name", FOLDERS)
def test_padded_batch(fixtures_dir: Path, name: str) -> None:
    """Padded batch with lengths: frame lengths exact, layers/final/codebooks on valid frames,
    padded loss and perplexities."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    waveforms, lengths = fixture.inputs["padded_waveforms"], fixture.inputs["lengths"]
    frames = model.frame_lengths(lengths)
    fixture.check("padded_frame_lengths", frames)
    assert torch.equal(
        fixture.inputs["padded_attention_mask"][:, 0, 0],
        torch.arange(waveforms.shape[1] // 320)[None, : frames.max()] < frames[:, None],
    )
    with torch.no_grad():
        for i, y in enumerate(model.get_intermediate_outputs(waveforms, lengths), start=1):
            fixture.check(f"padded_layer_{i}", y, frames)
        full = model.get_intermediate_outputs(waveforms, lengths, before_residual=False)
        for i, y in enumerate(full, start=1):
            fixture.check(f"padded_layer_{i}_after_residual", y, frames)
        fixture.check("padded_final", model.encode(waveforms, lengths), frames)
        probs = model.get_codebooks(waveforms, lengths)
        for j, p in enumerate(probs):
            fixture.check(f"padded_codebook_probs_{_list_index(model, j)}", p, frames)
        loss, stats = model(waveforms, mask=fixture.inputs["padded_mask"], lengths=lengths)
    fixture.check("padded_loss", loss)
    fixture.check("padded_target_ppl", stats["target_ppl"])
    fixture.check("padded_pred_ppl", stats["pred_ppl"])


@pytest.mark.parametrize("name", FOLDERS)
def test_training_step(fixtures_dir: Path, name: str) -> None:
    """Train-mode forward updates the codebooks; update_teacher(step) moves the teacher (pos
    conv copied), records the step; the eval loss afterwards uses both."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    step = fixture.spec["training_step"]["step"]
    waveforms, mask = fixture.inputs["waveforms"], fixture.inputs["mask"]
    model.train()
    assert not model.teacher.training
    loss, stats = model(waveforms, mask=mask)
    fixture.check("train_loss", loss)
    fixture.check("train_target_ppl", stats["target_ppl"])
    fixture.check("train_pred_ppl", stats["pred_ppl"])
    decay = model.update_teacher(step)
    assert decay == pytest.approx(fixture.expected["ema_decay"].item(), abs=1e-12)
    fixture.check("current_step_after", model.current_step)
    for j in range(model.num_codebooks):
        fixture.check(f"codebooks_after_{j}", model.codebooks.sums[j])
        fixture.check(f"counts_after_{j}", model.codebooks.counts[j])
    teacher = model.teacher.state_dict()
    keys = [key for key in fixture.expected if key.startswith("teacher_after.")]
    assert keys
    for key in keys:
        fixture.check(key, teacher[key.removeprefix("teacher_after.")])
    model.eval()
    with torch.no_grad():
        loss, stats = model(waveforms, mask=mask)
    fixture.check("loss_after_step", loss)
    fixture.check("target_ppl_after_step", stats["target_ppl"])
    fixture.check("pred_ppl_after_step", stats["pred_ppl"])


@pytest.mark.parametrize("name", FOLDERS)
def test_ema_schedule(fixtures_dir: Path, name: str) -> None:
    """ema_decay(step) equals the reference scheduler to 1e-12 at every recorded step."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    steps = fixture.expected["ema_decay_steps"].tolist()
    values = fixture.expected["ema_decay_values"].tolist()
    assert len(steps) == len(values) > 10
    for step, value in zip(steps, values, strict=True):
        assert model.ema_decay(step) == pytest.approx(value, abs=1e-12), step


@pytest.mark.parametrize("name", FOLDERS)
def test_native_round_trip_is_bitwise(fixtures_dir: Path, name: str, tmp_path: Path) -> None:
    """save_pretrained -> from_pretrained: same class, config and bitwise-identical state."""
    fixture = _fixture(fixtures_dir, name)
    model = _load(fixture)
    model.save_pretrained(tmp_path / "native")
    loaded = load_model(tmp_path / "native")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), key
    waveforms = fixture.inputs["waveforms"]
    with torch.no_grad():
        assert torch.equal(model.encode(waveforms), loaded.encode(waveforms))
